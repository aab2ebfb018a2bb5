//! Backups and moving data (ops.md §6–7): `prefsd backup` and `prefsd export` ask the
//! running daemon; `prefsd restore` works offline on the database file.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;

use crate::client::{Client, Refused};

/// `prefsd backup PATH`: the daemon writes and verifies the copy; the path is made
/// absolute here, since the daemon's working directory is not this one's.
pub async fn backup(client: &Client, path: &Path) -> anyhow::Result<()> {
    let path =
        std::path::absolute(path).with_context(|| format!("the backup path {}", path.display()))?;
    let info = client
        .call("daemon.backup", json!({ "path": path }))
        .await?;
    super::print_json(&info);
    Ok(())
}

/// `prefsd export [--out FILE]`: the daemon's snapshot as NDJSON, to FILE (written under a
/// temporary name, mode 0600, and renamed once complete) or standard output, with progress
/// on a terminal.
pub async fn export(client: &Client, out: Option<&Path>) -> anyhow::Result<()> {
    let status = client
        .call("daemon.status", serde_json::Value::Null)
        .await?;
    let counts = &status["counts"];
    let total = ["users", "objects", "tenants"]
        .iter()
        .map(|k| counts[k].as_u64().unwrap_or(0))
        .sum::<u64>()
        + 1;
    let (mut writer, tmp): (Box<dyn std::io::Write>, Option<PathBuf>) = match out {
        Some(out) => {
            let tmp = crate::store::backup::temp_beside(out, "partial");
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            (
                Box::new(std::io::BufWriter::with_capacity(256 * 1024, file)),
                Some(tmp),
            )
        }
        None => (
            Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            None,
        ),
    };
    let result = receive(client, &mut writer, total).await;
    let finished = result.and_then(|count| {
        writer.flush().context("writing the export")?;
        drop(writer);
        if let (Some(tmp), Some(out)) = (&tmp, out) {
            std::fs::File::open(tmp)
                .and_then(|f| f.sync_all())
                .and_then(|()| std::fs::rename(tmp, out))
                .with_context(|| format!("placing the export at {}", out.display()))?;
        }
        Ok(count)
    });
    match finished {
        Ok(count) => {
            let to = out.map_or("standard output".to_string(), |o| o.display().to_string());
            eprintln!("exported {count} lines to {to}");
            Ok(())
        }
        Err(e) => {
            if let Some(tmp) = &tmp {
                let _ = std::fs::remove_file(tmp);
            }
            Err(e)
        }
    }
}

/// Writes the export's lines as they come; answers how many, once the daemon says done.
async fn receive(
    client: &Client,
    writer: &mut dyn std::io::Write,
    total: u64,
) -> anyhow::Result<u64> {
    let mut sub = client.export().await?;
    let mut progress = crate::client::Progress::new(total, "rows");
    let mut written = 0u64;
    let outcome = loop {
        let Some(message) = sub.next().await else {
            break Err(anyhow::anyhow!(
                "the export was cut off after {written} lines (the daemon stopped, or this client fell behind)"
            ));
        };
        let message = message.context("reading the export")?;
        for line in &message.lines {
            writer.write_all(line.get().as_bytes())?;
            writer.write_all(b"\n")?;
        }
        written += message.lines.len() as u64;
        progress.set(written.min(total), "exporting");
        if let Some(error) = message.error {
            break Err(Refused(error).into());
        }
        if message.done {
            if message.count != written {
                break Err(anyhow::anyhow!(
                    "the daemon sent {} lines but {written} arrived",
                    message.count
                ));
            }
            break Ok(written);
        }
    };
    progress.finish();
    outcome
}

/// `prefsd restore BACKUP [--database PATH]`, offline: refused (exit 1) while a daemon
/// holds the database or when the backup does not verify; nothing is changed then.
pub fn restore(
    backup: &Path,
    database: Option<&Path>,
    config_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let database = match database {
        Some(d) => d.to_path_buf(),
        None => crate::config::load_dir(config_dir)
            .map(|c| c.settings.database)
            .map_err(|_| {
                anyhow::anyhow!(
                    "no --database given and the config in {} cannot be read; name the database with --database",
                    config_dir.display()
                )
            })?,
    };
    use crate::store::backup::BackupError;
    match crate::store::backup::restore(backup, &database) {
        Ok(restored) => {
            super::print_json(&serde_json::to_value(&restored)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (BackupError::Locked(_) | BackupError::Unusable { .. })) => {
            Err(Refused(format!("nothing was restored: {e}")).into())
        }
        Err(e) => Err(anyhow::Error::from(e).context("restoring the database")),
    }
}
