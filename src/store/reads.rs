//! The read cache's protocol, for the two shapes of read the methods make, in one place:
//! look in the cache; on a miss take a [`Ticket`], read in one transaction, and offer what
//! was read (the ticket keeps a read that began before a write from caching what the write
//! replaced). `api` asks for a shape and gets its values; it never runs the protocol.
//!
//! - [`Db::cached_snapshot`], [`Db::read_snapshot`] and [`Db::snapshot_queued`]: what
//!   `preferences.evaluate` reads — a tenant row, an actor, and each recipient's inputs
//!   ([`Snapshot`]).
//! - [`Db::recipient_for_read`]: what a preference read of one recipient needs — its inputs
//!   for a set, and a tenant row.

use std::future::Future;
use std::sync::Arc;

use crate::model::{DEFAULT_SET, RecipientKey};
use crate::store::{Cache, Db, Error, EvaluationInputs, Inputs, Read, TenantRow, Ticket, View};

/// Everything one evaluation reads: from one transaction, or all of it from the cache.
pub struct Snapshot {
    pub tenant: Option<Arc<TenantRow>>,
    pub actor: Option<Arc<Inputs>>,
    pub recipients: Vec<Arc<Inputs>>,
}

/// What a [`Snapshot`] holds: the stored row of `tenant`, the inputs of `actor`, and those
/// of each of `recipients` with its set `tenant_set`.
pub struct Wanted<'a, K> {
    pub tenant: Option<&'a str>,
    pub tenant_set: Option<&'a str>,
    pub actor: Option<RecipientKey>,
    pub recipients: &'a [K],
}

impl Read<'_> {
    /// The snapshot `wanted` describes, from this transaction (the cache is not asked, and
    /// is not offered it: a writer's transaction reads through here too).
    pub fn snapshot<K: AsRef<RecipientKey>>(
        &self,
        wanted: &Wanted<'_, K>,
    ) -> Result<Snapshot, Error> {
        Snapshot::read(
            wanted,
            |t| self.tenant(t),
            |k, s| self.evaluation_inputs(k, s),
        )
    }
}

impl Snapshot {
    /// The snapshot `wanted` describes, read with these two reads (of the state now, or of
    /// a past instant: `store::past`), the inputs made compact as the cache keeps them.
    pub(super) fn read<K: AsRef<RecipientKey>>(
        wanted: &Wanted<'_, K>,
        tenant: impl Fn(&str) -> Result<Option<TenantRow>, Error>,
        inputs: impl Fn(&RecipientKey, Option<&str>) -> Result<EvaluationInputs, Error>,
    ) -> Result<Snapshot, Error> {
        let tenant = match wanted.tenant {
            Some(t) => tenant(t)?.map(Arc::new),
            None => None,
        };
        let actor = match &wanted.actor {
            Some(key) => Some(Arc::new(Inputs::from(inputs(key, None)?))),
            None => None,
        };
        let recipients = wanted
            .recipients
            .iter()
            .map(|k| inputs(k.as_ref(), wanted.tenant_set).map(|i| Arc::new(Inputs::from(i))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot {
            tenant,
            actor,
            recipients,
        })
    }
}

impl Snapshot {
    /// The snapshot from the cache, when it holds everything `wanted` names.
    fn cached<K: AsRef<RecipientKey>>(view: &View<'_>, wanted: &Wanted<'_, K>) -> Option<Snapshot> {
        let tenant = match wanted.tenant {
            Some(t) => view.tenant(t)?,
            None => None,
        };
        let actor = match &wanted.actor {
            Some(key) => Some(view.inputs(key, None)?),
            None => None,
        };
        let recipients = wanted
            .recipients
            .iter()
            .map(|k| view.inputs(k.as_ref(), wanted.tenant_set))
            .collect::<Option<Vec<_>>>()?;
        Some(Snapshot {
            tenant,
            actor,
            recipients,
        })
    }

    /// Offers what a read transaction begun after `ticket` loaded to the cache.
    fn remember<K: AsRef<RecipientKey>>(
        &self,
        cache: &Cache,
        ticket: Ticket,
        wanted: &Wanted<'_, K>,
    ) {
        if let Some(t) = wanted.tenant {
            cache.put_tenant(ticket, t, self.tenant.as_ref());
        }
        if let (Some(key), Some(actor)) = (&wanted.actor, &self.actor)
            && cache.admit(key, None)
        {
            cache.put_inputs(ticket, key, None, actor);
        }
        for (k, inputs) in wanted.recipients.iter().zip(&self.recipients) {
            if cache.admit(k.as_ref(), wanted.tenant_set) {
                cache.put_inputs(ticket, k.as_ref(), wanted.tenant_set, inputs);
            }
        }
    }
}

impl Db {
    /// The snapshot `wanted` describes, when the cache holds all of it.
    pub fn cached_snapshot<K: AsRef<RecipientKey>>(
        &self,
        wanted: &Wanted<'_, K>,
    ) -> Option<Snapshot> {
        self.cache().lookup(|v| Snapshot::cached(v, wanted))
    }

    /// The snapshot `wanted(owner)` describes, from one read transaction, then offered to
    /// the cache (after [`Db::cached_snapshot`] found it incomplete).
    pub async fn read_snapshot<T, K>(
        &self,
        owner: Arc<T>,
        wanted: fn(&T) -> Wanted<'_, K>,
    ) -> Result<Snapshot, Error>
    where
        T: Send + Sync + 'static,
        K: AsRef<RecipientKey> + 'static,
    {
        let cache = self.cache();
        let ticket = cache.ticket();
        let reader = Arc::clone(&owner);
        let snapshot = self.read(move |r| r.snapshot(&wanted(&reader))).await?;
        snapshot.remember(cache, ticket, &wanted(&owner));
        Ok(snapshot)
    }

    /// A snapshot read on a reader thread and handed to `then` there, queued at once (as
    /// [`Db::read_queued`]), then offered to the cache and dropped on that thread. It does
    /// not look in the cache first: it is for the chunks of a large evaluation that the
    /// cache could not answer whole.
    pub fn snapshot_queued<T, K, R, E, W, F>(
        &self,
        owner: Arc<T>,
        wanted: W,
        then: F,
    ) -> impl Future<Output = Result<R, E>> + Send + 'static
    where
        T: Send + Sync + 'static,
        K: AsRef<RecipientKey> + 'static,
        W: for<'a> Fn(&'a T) -> Wanted<'a, K> + Send + 'static,
        F: FnOnce(&T, &Snapshot) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let cache = Arc::clone(self.cache());
        let ticket = cache.ticket();
        self.read_queued(move |r| {
            let wanted = wanted(&owner);
            let snapshot = r.snapshot(&wanted)?;
            let result = then(&owner, &snapshot)?;
            snapshot.remember(&cache, ticket, &wanted);
            Ok(result)
        })
    }

    /// A recipient's stored inputs with its set `tenant_set`, and the stored row of tenant
    /// `tenant` when asked: from the cache when it holds both, otherwise from one read
    /// transaction whose result is offered to the cache. A recipient the cache does not
    /// admit yet (the first of its reads) is read for its sets alone, the part a preference
    /// read needs (a quarter of the B-tree descents on a large database); that partial value
    /// never reaches the cache.
    pub async fn recipient_for_read(
        &self,
        key: RecipientKey,
        tenant_set: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<(Arc<Inputs>, Option<Arc<TenantRow>>), Error> {
        let cache = self.cache();
        let cached = cache.lookup(|v| {
            let inputs = v.inputs(&key, tenant_set)?;
            let row = match tenant {
                Some(t) => v.tenant(t)?,
                None => None,
            };
            Some((inputs, row))
        });
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let ticket = cache.ticket();
        let admit = cache.admit(&key, tenant_set);
        let (set, id) = (tenant_set.map(str::to_string), tenant.map(str::to_string));
        let (key, inputs, row) = self
            .read(move |r| {
                let inputs = if admit {
                    r.evaluation_inputs(&key, set.as_deref())?
                } else {
                    EvaluationInputs {
                        default_set: r.set(&key, DEFAULT_SET)?,
                        tenant_set: set
                            .as_deref()
                            .map(|s| r.set(&key, s))
                            .transpose()?
                            .flatten(),
                        ..EvaluationInputs::default()
                    }
                };
                let row = match &id {
                    Some(t) => r.tenant(t)?.map(Arc::new),
                    None => None,
                };
                Ok::<_, Error>((key, Arc::new(Inputs::from(inputs)), row))
            })
            .await?;
        if admit {
            cache.put_inputs(ticket, &key, tenant_set, &inputs);
        }
        if let Some(t) = tenant {
            cache.put_tenant(ticket, t, row.as_ref());
        }
        Ok((inputs, row))
    }
}
