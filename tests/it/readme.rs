//! The README tells the truth: its tour runs as shown, in order, against a fresh daemon on
//! the shipped `config/`, and its command-line reference is the one clap builds.

use std::path::Path;
use std::process::Command;

use crate::child::ChildDaemon;

const README: &str = include_str!("../../README.md");

/// One command of the tour and what it prints (`...` as in [`matches`]).
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The ```console blocks between `<!-- tour -->` and `<!-- /tour -->`: `$ ` starts a
/// command, `> ` continues it on the next line, other lines are its expected output.
fn tour_steps(readme: &str) -> Vec<Step> {
    let start = readme
        .find("<!-- tour -->")
        .expect("the README marks its tour");
    let end = readme
        .find("<!-- /tour -->")
        .expect("the README marks the tour's end");
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    for line in readme[start..end].lines() {
        if line.starts_with("```") {
            in_block = line == "```console";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_string(),
                expected: Vec::new(),
            });
        } else if let (Some(more), Some(step)) = (line.strip_prefix("> "), steps.last_mut()) {
            step.command.push('\n');
            step.command.push_str(more);
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_string());
        }
    }
    steps
}

/// Whether `actual` is what `expected` shows: a line that is only `...` stands for any
/// number of lines, and `...` inside a line for any text.
fn matches(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, more)| line_matches(first, line) && matches(rest, more)),
    }
}

fn line_matches(pattern: &str, line: &str) -> bool {
    let pieces: Vec<&str> = pattern.split("...").collect();
    if pieces.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn the_matcher_reads_ellipses() {
    let expected = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert!(matches(
        &expected(&["a", "...", "d"]),
        &["a", "b", "c", "d"]
    ));
    assert!(matches(&expected(&["a", "...", "b"]), &["a", "b"]));
    assert!(!matches(&expected(&["a", "d"]), &["a", "b", "d"]));
    assert!(line_matches("id ...: ok", "id 42: ok"));
    assert!(line_matches("{...}", "{}"));
    assert!(!line_matches("id ...: ok", "id 42: no"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_runs_as_the_readme_shows() {
    let steps = tour_steps(README);
    assert!(steps.len() >= 10, "the tour has its commands: {steps:?}");
    let dir = tempfile::tempdir().expect("a temp dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    copy_dir(&shipped, &dir.path().join("config"));
    let daemon = ChildDaemon::spawn(dir.path());
    let bin = Path::new(env!("CARGO_BIN_EXE_prefsd"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for step in steps {
        let cwd = dir.path().to_path_buf();
        let path = path.clone();
        let command = step.command.clone();
        let output = tokio::task::spawn_blocking(move || {
            Command::new("sh")
                .arg("-c")
                .arg(&command)
                .current_dir(cwd)
                .env("PATH", path)
                .env_remove("PREFSD_SOCKET")
                .env_remove("PREFSD_CONFIG")
                .env_remove("PREFSD_DATABASE")
                .env("PREFSD_LOG", "warn")
                .output()
                .expect("running sh")
        })
        .await
        .expect("the blocking task");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let actual: Vec<&str> = stdout.lines().collect();
        assert!(
            output.status.success() && matches(&step.expected, &actual),
            "the tour's `{}` printed (exit {:?}):\n{stdout}\n--- stderr\n{}\n--- the README shows\n{}",
            step.command,
            output.status.code(),
            String::from_utf8_lossy(&output.stderr),
            step.expected.join("\n")
        );
    }
    daemon.kill();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating a directory");
    for entry in std::fs::read_dir(from).expect("reading the shipped config") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copying a config file");
        }
    }
}

/// The README's command-line reference, as clap describes the commands: one row per
/// subcommand, `| \`prefsd NAME\` | about |`.
fn reference_table() -> String {
    use clap::CommandFactory as _;
    fn rows(command: &clap::Command, path: &str, out: &mut String) {
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let name = format!("{path} {}", sub.get_name());
            // A command with subcommands that also runs alone (`bench`) has a row too.
            if !sub.has_subcommands() || !sub.is_subcommand_required_set() {
                let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
                out.push_str(&format!("| `{name}` | {about} |\n"));
            }
            rows(sub, &name, out);
        }
    }
    let mut out = String::from("| command | what it does |\n|---|---|\n");
    rows(&prefsd::cli::args::Cli::command(), "prefsd", &mut out);
    out
}

#[test]
fn the_readme_command_reference_is_claps() {
    let table = reference_table();
    assert!(
        README.contains(&table),
        "the README's command-line reference differs from clap's; it should be:\n{table}"
    );
    assert!(
        README.contains(prefsd::cli::args::ENVIRONMENT_HELP),
        "the README lists the environment and exit codes as `prefsd --help` does:\n{}",
        prefsd::cli::args::ENVIRONMENT_HELP
    );
}
