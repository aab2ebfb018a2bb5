//! A bounded, in-memory cache of what reads load per recipient and per tenant, so a hot
//! recipient is answered on the async worker without a hop to a reader thread.
//!
//! Consistency rests on two rules:
//! - The writer invalidates what a transaction touched after it commits and before its
//!   caller hears back ([`Cache::invalidate`]), so a client that wrote and then reads sees
//!   its write.
//! - A reader takes a [`Ticket`] before its read transaction starts and may insert only if
//!   no write has invalidated anything since. A read whose snapshot predates a commit
//!   therefore never inserts after that commit's invalidation; if it inserted before it,
//!   the invalidation removes the entry.
//!
//! Values are shared (`Arc`), never copied out. The cache is bounded by the memory its
//! values hold, strictly: an entry that would take more than an eighth of the budget is
//! never admitted, and when an insert passes the budget a quarter of the entries, arbitrary
//! ones, are dropped per pass until it is under again.
//!
//! A recipient's values are kept compact ([`Inputs`], issue 17.7): its sets as
//! `model::compact` sets (keys shared through one interner), its properties as their JSON
//! text, parsed only when a condition reads them, its timestamps in one allocation. Parsed as
//! `serde_json` values they took about 6.4 KB of resident memory for a recipient of the
//! benchmark's data (B-tree nodes of 632 bytes per object, however small); compact, about
//! 1.1 KB. Nothing derived is kept: `getPreferences` writes its answer from the compact sets
//! on every call (a rendered copy per entry made it 1.5 KB, and writing the answer costs less
//! than copying the kept one did with its look-up). An entry's weight is what its
//! allocations take from the allocator, computed from its lengths ([`Inputs::weight`]),
//! times the slack of the allocator's pages ([`PAGE_SLACK`]), and checked against the
//! daemon's resident memory (README, performance).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use crate::model::RecipientKey;
use crate::model::compact::{CompactSet, Interner, allocated};
use crate::store::{EvaluationInputs, TenantRow};

/// A row a write transaction touched, so its cached copies must go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    Recipient(RecipientKey),
    Tenant(String),
}

/// Proof of when a read started: see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct Ticket(u64);

pub struct Cache {
    state: Mutex<State>,
    /// In estimated bytes; 0 turns the cache off. See [`Cache::set_budget`].
    budget: AtomicUsize,
    hasher: std::collections::hash_map::RandomState,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What `daemon.status` shows of the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Recipients with cached inputs, and tenants with a cached row (or absence).
    pub recipients: usize,
    pub tenants: usize,
    /// The estimated memory of the cached values, and the budget it is held under.
    pub bytes: usize,
    pub budget: usize,
    /// Look-ups answered from the cache, and those that read the database instead.
    pub hits: u64,
    pub misses: u64,
}

/// One recipient's cached inputs, per tenant set read: a boxed slice, which is 8 bytes
/// less in the map's slot than a `Vec` and never holds spare room.
type PerSet = Box<[(Option<Box<str>>, Arc<Inputs>)]>;

/// What evaluating or reading one recipient needs, compact (see the module docs): what the
/// cache holds, and what every read hands out, cached or not, so that a hit and a miss
/// evaluate the same form.
#[derive(Debug)]
pub struct Inputs {
    /// The properties object as JSON text; `None` when the recipient is not stored.
    properties: Option<Box<str>>,
    /// When the recipient was first stored and last changed (RFC 3339), one after the
    /// other in one allocation, the first `created_len` bytes the first; `None` when it is
    /// not stored.
    stamps: Option<Box<str>>,
    pub default_set: Option<CompactSet>,
    pub tenant_set: Option<CompactSet>,
    pub audiences: Box<[Arc<str>]>,
    /// The bytes all this takes: see [`Inputs::weight`]. (With the field after it, 32 bits
    /// each, the struct fits the allocator's 96-byte class with its `Arc`'s counts.)
    weight: u32,
    created_len: u32,
}

/// The keys of every compact set, shared by all recipients.
static KEYS: LazyLock<Interner> = LazyLock::new(Interner::default);

impl From<EvaluationInputs> for Inputs {
    fn from(read: EvaluationInputs) -> Inputs {
        let keys = &*KEYS;
        let (stamps, created_len) = match (read.created_at, read.updated_at) {
            (Some(created), Some(updated)) => {
                let len = created.len();
                (Some(created + &updated), len)
            }
            (Some(created), None) => {
                let len = created.len();
                (Some(created), len)
            }
            (None, updated) => (updated, 0),
        };
        let mut inputs = Inputs {
            properties: match &read.properties {
                serde_json::Value::Null => None,
                value => Some(value.to_string().into_boxed_str()),
            },
            stamps: stamps.map(String::into_boxed_str),
            default_set: read.default_set.map(|s| CompactSet::new(&s, keys)),
            tenant_set: read.tenant_set.map(|s| CompactSet::new(&s, keys)),
            audiences: read
                .audiences
                .iter()
                .map(|a| Arc::from(a.as_str()))
                .collect(),
            weight: 0,
            created_len: u32::try_from(created_len).unwrap_or(0),
        };
        inputs.weight = u32::try_from(inputs.measure()).unwrap_or(u32::MAX);
        inputs
    }
}

impl Inputs {
    /// The properties object as JSON text, `None` when the recipient is not stored.
    pub fn properties_text(&self) -> Option<&str> {
        self.properties.as_deref()
    }

    /// The bytes the allocator holds for this entry: the struct in its `Arc`, the texts,
    /// the compact sets and the audience keys (interned set keys are shared, so not counted
    /// per entry).
    pub fn weight(&self) -> usize {
        self.weight as usize
    }

    /// When the recipient was first stored (RFC 3339); `None` when it is not stored.
    pub fn created_at(&self) -> Option<&str> {
        let stamps = self.stamps.as_deref()?;
        stamps
            .get(..self.created_len as usize)
            .filter(|s| !s.is_empty())
    }

    /// When the recipient was last changed (RFC 3339); `None` when it is not stored.
    pub fn updated_at(&self) -> Option<&str> {
        let stamps = self.stamps.as_deref()?;
        stamps
            .get(self.created_len as usize..)
            .filter(|s| !s.is_empty())
    }

    fn measure(&self) -> usize {
        let text = |t: &Option<Box<str>>| t.as_deref().map_or(0, |t| allocated(t.len()));
        let sets = [&self.default_set, &self.tenant_set];
        let sets_heap: usize = sets
            .iter()
            .flat_map(|s| s.as_ref())
            .map(CompactSet::heap_bytes)
            .sum();
        allocated(16 + std::mem::size_of::<Inputs>())
            + text(&self.properties)
            + text(&self.stamps)
            + sets_heap
            + allocated(std::mem::size_of_val::<[Arc<str>]>(&self.audiences))
            + self
                .audiences
                .iter()
                .map(|a| allocated(16 + a.len()))
                .sum::<usize>()
    }
}

#[cfg(test)]
impl Inputs {
    /// Inputs whose weight is `weight`, for the tests of the budget.
    pub(crate) fn weighing(weight: u32, marker: &str) -> Inputs {
        Inputs {
            properties: Some(format!(r#"{{"marker":"{marker}"}}"#).into_boxed_str()),
            weight,
            ..Inputs::from(EvaluationInputs::default())
        }
    }
}

impl PartialEq for Inputs {
    /// Equal when all but the weight (derived from the rest) are.
    fn eq(&self, other: &Inputs) -> bool {
        self.properties == other.properties
            && self.stamps == other.stamps
            && self.created_len == other.created_len
            && self.default_set == other.default_set
            && self.tenant_set == other.tenant_set
            && self.audiences == other.audiences
    }
}

#[derive(Default)]
struct State {
    /// Bumped by every invalidation.
    generation: u64,
    /// Per recipient, the inputs read for each tenant set asked for (`None`: no tenant).
    recipients: HashMap<RecipientKey, PerSet>,
    /// Per tenant id, its row or `None` when it is not stored.
    tenants: HashMap<String, Option<Arc<TenantRow>>>,
    /// The estimated size of everything above.
    weight: usize,
    /// Hashes of recipient entries read once and not admitted: see [`Cache::admit`].
    seen_once: HashSet<u64>,
}

/// How many once-read entries are remembered before the memory of them starts afresh.
const SEEN_ONCE: usize = 16 * 1024;

/// A parsed JSON value costs many times its text (a B-tree node of about 600 bytes per
/// map, one allocation per string): tenant rows, few and cached once per change, are kept
/// parsed and weighed by their text.
const PARSED_PER_TEXT_BYTE: usize = 13;
/// What an entry costs besides its values and its id: the map slot (64 bytes of key and
/// list, and the table's spare capacity: between 1/8 and 9/16 of it) and the list of its
/// tenant sets (24 bytes per set).
const ENTRY_OVERHEAD: usize = 100 + 24;

/// What the allocator's pages hold beyond the blocks an entry asked for, as a ratio: the
/// daemon's resident memory grew by 1.27–1.29 times the sum of the entries' blocks for
/// 20 000 cached recipients of the 1M-user benchmark database (1.0–1.1 times for 10 000 of
/// a fresh 10 000-user one: cache.rs in the integration tests measures it), since entries
/// are allocated among the short-lived values of the reads that made them and share pages
/// with the gaps those leave. It was 1.16–1.19 times the old estimate before issue 17.7 too.
/// Counting more than is taken only makes the cache hold fewer entries.
const PAGE_SLACK: (usize, usize) = (13, 10);

/// The largest share of the budget one entry may take: a larger one is not cached (issue
/// 22.5: recipients with large properties took the cache to 205 MB against 8 MiB, since
/// an entry was admitted whatever its size and one pass of trimming could miss it).
const MAX_ENTRY_SHARE: usize = 8;

impl Cache {
    /// A cache that holds at most about `budget` bytes of parsed values.
    pub fn new(budget: usize) -> Cache {
        Cache {
            state: Mutex::new(State::default()),
            budget: AtomicUsize::new(budget),
            hasher: Default::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Changes the budget (`limits.read_cache_mb` on a reload), trimming at once if the
    /// cache is now over it; 0 empties the cache and turns it off.
    pub fn set_budget(&self, budget: usize) {
        self.budget.store(budget, Ordering::Relaxed);
        let mut state = self.state();
        if budget == 0 {
            state.recipients.clear();
            state.tenants.clear();
            state.seen_once.clear();
            state.weight = 0;
        }
        self.trim(&mut state);
    }

    fn budget(&self) -> usize {
        self.budget.load(Ordering::Relaxed)
    }

    /// Moves the generation on, so that no read begun before this call inserts what it
    /// read: for a cache that may have missed invalidations (a fleet daemon that lost its
    /// change feed), together with emptying it.
    pub fn forget_tickets(&self) {
        self.state().generation += 1;
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent with the
        // database (at worst an entry is missing), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken before a read that may insert what it reads.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.state().generation)
    }

    /// Runs `f` on the cache as it is now, under one lock, so everything `f` finds is one
    /// consistent state (no write can invalidate between two of its look-ups). `f` answers
    /// `None` when something it needs is not cached, which counts as a miss.
    pub fn lookup<R>(&self, f: impl FnOnce(&View<'_>) -> Option<R>) -> Option<R> {
        let found = f(&View {
            state: &self.state(),
        });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Whether inputs about to be read for `key` and `tenant_set` should be cached: yes
    /// when the recipient already has cached entries or this entry was read (and not
    /// cached) before; otherwise the read is remembered and the answer is no. Admitting
    /// on the second read keeps a recipient read once in a long while (uniform reads over
    /// a million users) from evicting one read all the time, and lets a first read fetch
    /// only what its method needs.
    pub fn admit(&self, key: &RecipientKey, tenant_set: Option<&str>) -> bool {
        if self.budget() == 0 {
            return false;
        }
        let mut state = self.state();
        if state.recipients.contains_key(key) {
            return true;
        }
        let hash = self.hasher.hash_one((key, tenant_set));
        if state.seen_once.remove(&hash) {
            return true;
        }
        if state.seen_once.len() >= SEEN_ONCE {
            state.seen_once.clear();
        }
        state.seen_once.insert(hash);
        false
    }

    /// Caches inputs read under `ticket`, unless a write has invalidated since.
    pub fn put_inputs(
        &self,
        ticket: Ticket,
        key: &RecipientKey,
        tenant_set: Option<&str>,
        inputs: &Arc<Inputs>,
    ) {
        let mut state = self.state();
        if state.generation != ticket.0 || self.budget() == 0 {
            return;
        }
        let weight = inputs_weight(key, inputs);
        if weight > self.budget() / MAX_ENTRY_SHARE {
            return;
        }
        let entries = state.recipients.entry(key.clone()).or_default();
        if entries.iter().any(|(set, _)| set.as_deref() == tenant_set) {
            return;
        }
        let entry = (tenant_set.map(Box::from), Arc::clone(inputs));
        *entries = entries.iter().cloned().chain([entry]).collect();
        state.weight += weight;
        self.trim(&mut state);
    }

    /// Caches a tenant row (or its absence) read under `ticket`, as [`Cache::put_inputs`].
    pub fn put_tenant(&self, ticket: Ticket, id: &str, row: Option<&Arc<TenantRow>>) {
        let mut state = self.state();
        if state.generation != ticket.0 || state.tenants.contains_key(id) || self.budget() == 0 {
            return;
        }
        let weight = tenant_weight(id, row.map(Arc::as_ref));
        if weight > self.budget() / MAX_ENTRY_SHARE {
            return;
        }
        state.tenants.insert(id.to_string(), row.cloned());
        state.weight += weight;
        self.trim(&mut state);
    }

    /// Drops every cached copy of what a committed write touched.
    pub fn invalidate(&self, touched: &[Touched]) {
        if touched.is_empty() {
            return;
        }
        let mut state = self.state();
        state.generation += 1;
        for t in touched {
            let freed = match t {
                Touched::Recipient(key) => {
                    state.recipients.remove_entry(key).map_or(0, |(k, v)| {
                        v.iter().map(|(_, i)| inputs_weight(&k, i)).sum()
                    })
                }
                Touched::Tenant(id) => state
                    .tenants
                    .remove(id)
                    .map_or(0, |row| tenant_weight(id, row.as_deref())),
            };
            state.weight = state.weight.saturating_sub(freed);
        }
    }

    pub fn stats(&self) -> CacheStats {
        let state = self.state();
        CacheStats {
            recipients: state.recipients.len(),
            tenants: state.tenants.len(),
            bytes: state.weight,
            budget: self.budget(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Over budget: drops a quarter of the entries per pass until under it (each pass drops
    /// at least one, so this ends, with an empty cache at worst).
    fn trim(&self, state: &mut State) {
        let budget = self.budget();
        while state.weight > budget {
            if state.recipients.is_empty() && state.tenants.is_empty() {
                state.weight = 0;
                break;
            }
            Cache::drop_a_quarter(state);
        }
    }

    /// Drops every fourth entry, in the maps' own (arbitrary) order, which costs one pass
    /// per quarter of the cache rather than a search per insert.
    fn drop_a_quarter(state: &mut State) {
        // Every fourth entry counting from the first, so that a cache of one to three
        // entries over the budget still shrinks.
        let mut n = 0usize;
        let mut drop_next = || {
            n += 1;
            n % 4 == 1
        };
        let mut freed = 0;
        state.recipients.retain(|key, entries| {
            let drop = drop_next();
            if drop {
                freed += entries
                    .iter()
                    .map(|(_, i)| inputs_weight(key, i))
                    .sum::<usize>();
            }
            !drop
        });
        state.tenants.retain(|id, row| {
            let drop = drop_next();
            if drop {
                freed += tenant_weight(id, row.as_deref());
            }
            !drop
        });
        state.weight = state.weight.saturating_sub(freed);
    }
}

/// The cache under its lock: see [`Cache::lookup`].
pub struct View<'a> {
    state: &'a State,
}

impl View<'_> {
    /// The cached inputs of `key` for `tenant_set`, if any.
    pub fn inputs(&self, key: &RecipientKey, tenant_set: Option<&str>) -> Option<Arc<Inputs>> {
        let entries = self.state.recipients.get(key)?;
        entries
            .iter()
            .find(|(set, _)| set.as_deref() == tenant_set)
            .map(|(_, inputs)| Arc::clone(inputs))
    }

    /// The cached row of tenant `id`: `Some(None)` when it is known not to exist.
    pub fn tenant(&self, id: &str) -> Option<Option<Arc<TenantRow>>> {
        self.state.tenants.get(id).cloned()
    }
}

fn inputs_weight(key: &RecipientKey, inputs: &Inputs) -> usize {
    (ENTRY_OVERHEAD + allocated(key.id.len()) + inputs.weight()) * PAGE_SLACK.0 / PAGE_SLACK.1
}

/// Tenants are few and cached once per change, so their text is measured by serialising.
fn tenant_weight(id: &str, row: Option<&TenantRow>) -> usize {
    let text = |row: &TenantRow| {
        let set = row.preference_set.as_ref().map_or(0, |s| {
            serde_json::to_string(s.as_map()).map_or(0, |t| t.len())
        });
        serde_json::to_string(&row.properties).map_or(0, |t| t.len()) + set
    };
    ENTRY_OVERHEAD + id.len() + row.map_or(0, |r| text(r) * PARSED_PER_TEXT_BYTE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PreferenceSet;

    const BUDGET: usize = 8 << 20;

    fn inputs(marker: &str) -> Arc<Inputs> {
        Arc::new(Inputs::weighing(1_000, marker))
    }

    /// The struct of an entry fits the allocator's 96-byte class with its `Arc`'s counts.
    #[test]
    fn inputs_fit_96_bytes_with_their_counts() {
        assert!(16 + std::mem::size_of::<Inputs>() <= 96);
    }

    #[test]
    fn timestamps_are_read_back_from_their_one_allocation() {
        let read = |created: Option<&str>, updated: Option<&str>| {
            let inputs = Inputs::from(EvaluationInputs {
                created_at: created.map(str::to_string),
                updated_at: updated.map(str::to_string),
                ..EvaluationInputs::default()
            });
            (
                inputs.created_at().map(str::to_string),
                inputs.updated_at().map(str::to_string),
            )
        };
        let (c, u) = ("2024-04-17T19:40:17Z", "2025-01-02T03:04:05.123Z");
        for (created, updated) in [
            (Some(c), Some(u)),
            (Some(c), None),
            (None, Some(u)),
            (None, None),
        ] {
            let expected = (created.map(str::to_string), updated.map(str::to_string));
            assert_eq!(read(created, updated), expected);
        }
    }

    #[test]
    fn an_entry_is_admitted_when_read_a_second_time() {
        let cache = Cache::new(BUDGET);
        let (u1, u2) = (RecipientKey::user("u1"), RecipientKey::user("u2"));
        assert!(!cache.admit(&u1, None));
        assert!(!cache.admit(&u2, None));
        assert!(!cache.admit(&u1, Some("acme")));
        assert!(cache.admit(&u1, None));
        admit(&cache, cache.ticket(), &u1, None, &inputs("u1"));
        // Once a recipient is in, its other tenant sets need no second read.
        assert!(cache.admit(&u1, Some("other")));
        assert!(cache.admit(&u2, None));
        assert!(!cache.admit(&u2, Some("acme")));
    }

    /// Caches an entry the way callers do: if admitted, which the second read is.
    fn admit(
        cache: &Cache,
        ticket: Ticket,
        key: &RecipientKey,
        tenant_set: Option<&str>,
        inputs: &Arc<Inputs>,
    ) {
        if cache.admit(key, tenant_set) || cache.admit(key, tenant_set) {
            cache.put_inputs(ticket, key, tenant_set, inputs);
        }
    }

    fn tenant(id: &str) -> Arc<TenantRow> {
        Arc::new(TenantRow {
            id: id.to_string(),
            name: None,
            properties: Default::default(),
            preference_set: Some(PreferenceSet::default()),
            branding: None,
            created_at: String::new(),
            updated_at: String::new(),
        })
    }

    #[test]
    fn entries_are_kept_per_tenant_set_and_invalidated_per_recipient() {
        let cache = Cache::new(BUDGET);
        let u1 = RecipientKey::user("u1");
        let u2 = RecipientKey::user("u2");
        let t = cache.ticket();
        admit(&cache, t, &u1, None, &inputs("u1"));
        admit(&cache, t, &u1, Some("acme"), &inputs("u1 acme"));
        admit(&cache, t, &u2, None, &inputs("u2"));
        assert_eq!(
            cache.lookup(|v| v.inputs(&u1, Some("acme"))),
            Some(inputs("u1 acme"))
        );
        assert_eq!(cache.lookup(|v| v.inputs(&u1, None)), Some(inputs("u1")));
        assert_eq!(cache.lookup(|v| v.inputs(&u1, Some("other"))), None);

        cache.invalidate(&[Touched::Recipient(u1.clone())]);
        assert_eq!(cache.lookup(|v| v.inputs(&u1, None)), None);
        assert_eq!(cache.lookup(|v| v.inputs(&u1, Some("acme"))), None);
        assert_eq!(cache.lookup(|v| v.inputs(&u2, None)), Some(inputs("u2")));
        assert_eq!(cache.stats().bytes, inputs_weight(&u2, &inputs("u2")));
        assert_eq!((cache.stats().hits, cache.stats().misses), (3, 3));
    }

    #[test]
    fn a_read_that_started_before_an_invalidation_does_not_insert() {
        let cache = Cache::new(BUDGET);
        let u1 = RecipientKey::user("u1");
        let before = cache.ticket();
        // A write to anyone commits while the read is in flight; the read may have seen
        // the old row, so it must not be cached.
        cache.invalidate(&[Touched::Tenant("acme".into())]);
        admit(&cache, before, &u1, None, &inputs("stale"));
        cache.put_tenant(before, "acme", Some(&tenant("acme")));
        assert_eq!(cache.lookup(|v| v.inputs(&u1, None)), None);
        assert_eq!(cache.lookup(|v| v.tenant("acme")), None);

        let after = cache.ticket();
        admit(&cache, after, &u1, None, &inputs("fresh"));
        cache.put_tenant(after, "acme", None);
        assert_eq!(cache.lookup(|v| v.inputs(&u1, None)), Some(inputs("fresh")));
        assert_eq!(cache.lookup(|v| v.tenant("acme")), Some(None));
        cache.invalidate(&[Touched::Tenant("acme".into())]);
        assert_eq!(cache.lookup(|v| v.tenant("acme")), None);
    }

    #[test]
    fn a_budget_of_zero_empties_the_cache_and_keeps_it_empty() {
        let cache = Cache::new(BUDGET);
        let u1 = RecipientKey::user("u1");
        admit(&cache, cache.ticket(), &u1, None, &inputs("u1"));
        cache.put_tenant(cache.ticket(), "acme", None);
        assert_eq!(cache.stats().recipients, 1);
        cache.set_budget(0);
        assert_eq!(
            cache.stats(),
            CacheStats {
                misses: 0,
                ..CacheStats::default()
            }
        );
        assert!(!cache.admit(&u1, None) && !cache.admit(&u1, None));
        cache.put_inputs(cache.ticket(), &u1, None, &inputs("u1"));
        cache.put_tenant(cache.ticket(), "acme", None);
        assert_eq!((cache.stats().recipients, cache.stats().tenants), (0, 0));
        cache.set_budget(BUDGET);
        admit(&cache, cache.ticket(), &u1, None, &inputs("u1"));
        assert_eq!(cache.lookup(|v| v.inputs(&u1, None)), Some(inputs("u1")));
    }

    #[test]
    fn a_budget_below_a_few_large_entries_empties_the_cache() {
        let cache = Cache::new(BUDGET);
        // Each within the eighth of the budget an entry may take.
        let large = Arc::new(Inputs::weighing(650_000, "large"));
        for id in ["u1", "u2", "u3"] {
            admit(
                &cache,
                cache.ticket(),
                &RecipientKey::user(id),
                None,
                &large,
            );
        }
        assert_eq!(cache.stats().recipients, 3);
        cache.set_budget(1);
        assert_eq!((cache.stats().recipients, cache.stats().bytes), (0, 0));
    }

    #[test]
    fn an_entry_over_an_eighth_of_the_budget_is_not_cached() {
        let u1 = RecipientKey::user("u1");
        let large = Arc::new(Inputs::weighing(130_000, "large"));
        let weight = inputs_weight(&u1, &large);
        let cache = Cache::new(weight * MAX_ENTRY_SHARE - 1);
        admit(&cache, cache.ticket(), &u1, None, &large);
        cache.put_tenant(cache.ticket(), "acme", Some(&tenant("acme")));
        assert_eq!(cache.stats().recipients, 0);
        assert_eq!(cache.stats().tenants, 1);
        cache.set_budget(weight * MAX_ENTRY_SHARE);
        admit(&cache, cache.ticket(), &u1, None, &large);
        assert_eq!(cache.stats().recipients, 1);
    }

    #[test]
    fn the_budget_bounds_the_weight() {
        let one = inputs_weight(&RecipientKey::user("u0000"), &inputs("x"));
        let cache = Cache::new(one * 100);
        let t = cache.ticket();
        for i in 0..1000 {
            admit(
                &cache,
                t,
                &RecipientKey::user(format!("u{i:04}")),
                None,
                &inputs("x"),
            );
        }
        let CacheStats {
            recipients,
            bytes: weight,
            ..
        } = cache.stats();
        assert!(weight <= one * 100, "weight {weight} over the budget");
        assert!(
            recipients > 50,
            "trimming dropped too much: {recipients} left"
        );
        assert_eq!(weight, recipients * one);
    }
}
