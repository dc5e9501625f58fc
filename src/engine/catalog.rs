//! The LLMs served by name (`[[models.llms]]`), loaded when asked for:
//! a request naming one that is not loaded loads it (concurrent requests
//! for it wait for that one load; requests to models already loaded never
//! wait for it), a model that fails to load answers its error and leaves
//! the others serving, and idle models are unloaded: the least recently
//! used first when `limits.max_loaded_models` or
//! `limits.max_model_memory_mb` needs room, and any past its keep-alive
//! (Ollama's semantics: a duration after the last request, 0 once idle,
//! negative never). A model is idle when its worker runs and queues
//! nothing; only idle models are unloaded. Memory is counted before a
//! load, from the file's size and its KV caches at the limits' full
//! context.

use super::handle::Generation;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::OnceCell;

/// How long a model stays loaded after its last request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
}

impl KeepAlive {
    /// Ollama's forms: a duration (`"5m"`, `"30s"`, `"1h30m"`, `"300ms"`),
    /// a number of seconds (`"0"`, `"600"`), negative for ever (`"-1"`,
    /// `"-1m"`).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        if text.starts_with('-') {
            return Ok(KeepAlive::Forever);
        }
        if let Ok(seconds) = text.parse::<f64>() {
            if seconds.is_finite() {
                return Ok(KeepAlive::For(Duration::from_secs_f64(seconds)));
            }
        }
        humantime::parse_duration(text)
            .map(KeepAlive::For)
            .map_err(|e| {
                format!("{text:?} is not a duration (\"5m\", \"30s\", \"0\", \"-1\"): {e}")
            })
    }

    /// A request's `keep_alive`: a string as [`parse`](Self::parse) reads
    /// it, or a number of seconds.
    pub fn from_json(value: &serde_json::Value) -> std::result::Result<Self, String> {
        match value {
            serde_json::Value::String(s) => Self::parse(s),
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(s) if s < 0.0 => Ok(KeepAlive::Forever),
                Some(s) if s.is_finite() => Ok(KeepAlive::For(Duration::from_secs_f64(s))),
                _ => Err(format!("{n} is not a number of seconds")),
            },
            other => Err(format!(
                "keep_alive must be a duration or a number of seconds, got {other}"
            )),
        }
    }
}

/// One model the catalog can load.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// Its source (a file, a directory, `hf:...`).
    pub path: String,
    pub keep_alive: KeepAlive,
}

/// Loads a model from its source (blocking: the catalog runs it off the
/// runtime), and tells the bytes a load of it will take.
pub trait Loader: Send + Sync {
    fn load(&self, path: &str) -> Result<Generation>;
    fn bytes(&self, path: &str) -> Result<u64>;
}

/// The limits the catalog keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Models loaded at once (0: no limit).
    pub max_loaded: usize,
    /// Bytes the loaded models may take (0: no limit).
    pub max_bytes: u64,
}

struct Loaded {
    generation: Generation,
    bytes: u64,
    last_used: Instant,
    keep_alive: KeepAlive,
}

/// A load's end, shared by every request that waited for it.
type Outcome = std::result::Result<Generation, Failure>;

#[derive(Debug, Clone)]
enum Failure {
    /// No room while the loaded models are busy: a retry may find some.
    Room(String),
    /// The model itself could not be read or loaded.
    Load(String),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Room(m) => Error::Unavailable(m),
            Failure::Load(m) => Error::Model(m),
        }
    }
}

enum Slot {
    Loading(Arc<OnceCell<Outcome>>),
    Loaded(Box<Loaded>),
}

/// What [`Catalog::list`] says of a model.
pub struct Status {
    pub name: String,
    pub path: String,
    /// The model, while it is loaded.
    pub generation: Option<Generation>,
    /// The bytes it was counted as, while loaded.
    pub bytes: Option<u64>,
    /// When it will be unloaded if nothing uses it (None: loaded for ever,
    /// or not loaded).
    pub expires_at: Option<SystemTime>,
    /// Loads since the server started.
    pub loads: u64,
}

/// The models served by name, and which are loaded.
pub struct Catalog {
    entries: Vec<Entry>,
    limits: Limits,
    loader: Arc<dyn Loader>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    slots: HashMap<String, Slot>,
    loads: HashMap<String, u64>,
}

fn idle(g: &Generation) -> bool {
    g.stats().is_none_or(|s| s.active == 0 && s.queued == 0)
}

impl Catalog {
    pub fn new(entries: Vec<Entry>, limits: Limits, loader: Arc<dyn Loader>) -> Arc<Self> {
        Arc::new(Self {
            entries,
            limits,
            loader,
            state: Mutex::new(State::default()),
        })
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Whether `name` is one of the catalog's models.
    pub fn has(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    /// The model `name`, loading it first when it is not loaded; a request's
    /// `keep_alive` replaces the model's until its next request.
    pub async fn get(
        self: &Arc<Self>,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Generation> {
        let entry = self
            .entry(name)
            .ok_or_else(|| Error::NotFound(format!("no model named {name:?}")))?
            .clone();
        let cell = {
            let mut state = self.state.lock().expect("catalog lock");
            match state.slots.get_mut(name) {
                Some(Slot::Loaded(l)) => {
                    l.last_used = Instant::now();
                    if let Some(k) = keep_alive {
                        l.keep_alive = k;
                    }
                    return Ok(l.generation.clone());
                }
                Some(Slot::Loading(cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    state
                        .slots
                        .insert(name.to_string(), Slot::Loading(cell.clone()));
                    cell
                }
            }
        };
        let this = self.clone();
        let keep = keep_alive.unwrap_or(entry.keep_alive);
        // The load runs as its own task: a client that goes away while it
        // runs does not abandon it half done for the others waiting.
        let outcome = cell
            .get_or_init(|| async move {
                tokio::spawn(async move { this.load(&entry, keep).await })
                    .await
                    .unwrap_or_else(|e| Err(Failure::Load(format!("the load stopped: {e}"))))
            })
            .await
            .clone();
        outcome.map_err(Error::from)
    }

    /// Load `entry` (after making room), then record it loaded or, when the
    /// load failed, forget it so that a later request tries again.
    async fn load(self: &Arc<Self>, entry: &Entry, keep_alive: KeepAlive) -> Outcome {
        let this = self.clone();
        let path = entry.path.clone();
        let name = entry.name.clone();
        let outcome = async {
            let bytes = super::blocking({
                let this = this.clone();
                let path = path.clone();
                move || this.loader.bytes(&path)
            })
            .await
            .map_err(|e| Failure::Load(format!("the model {name:?} could not be read: {e}")))?;
            this.make_room(&name, bytes)?;
            let generation = super::blocking({
                let this = this.clone();
                move || this.loader.load(&path)
            })
            .await
            .map_err(|e| Failure::Load(format!("the model {name:?} could not be loaded: {e}")))?;
            Ok((generation, bytes))
        }
        .await;
        let mut state = self.state.lock().expect("catalog lock");
        match outcome {
            Ok((generation, bytes)) => {
                *state.loads.entry(entry.name.clone()).or_default() += 1;
                state.slots.insert(
                    entry.name.clone(),
                    Slot::Loaded(Box::new(Loaded {
                        generation: generation.clone(),
                        bytes,
                        last_used: Instant::now(),
                        keep_alive,
                    })),
                );
                tracing::info!(model = %entry.name, bytes, "loaded");
                Ok(generation)
            }
            Err(e) => {
                state.slots.remove(&entry.name);
                tracing::warn!(model = %entry.name, error = ?e, "load failed");
                Err(e)
            }
        }
    }

    /// Unload idle models, least recently used first, until one more of
    /// `bytes` fits the limits; refuse when the busy ones leave no room.
    fn make_room(&self, name: &str, bytes: u64) -> std::result::Result<(), Failure> {
        let limits = self.limits;
        // Too large alone: no wait helps, so not a 503.
        if limits.max_bytes > 0 && bytes > limits.max_bytes {
            return Err(Failure::Load(format!(
                "the model {name:?} needs {} MiB, more than limits.max_model_memory_mb ({} MiB)",
                bytes >> 20,
                limits.max_bytes >> 20
            )));
        }
        let mut state = self.state.lock().expect("catalog lock");
        loop {
            let (count, used, victim) = {
                let loaded: Vec<(&String, &Loaded)> = state
                    .slots
                    .iter()
                    .filter_map(|(n, s)| match s {
                        Slot::Loaded(l) => Some((n, &**l)),
                        Slot::Loading(_) => None,
                    })
                    .collect();
                let victim = loaded
                    .iter()
                    .filter(|(_, l)| idle(&l.generation))
                    .min_by_key(|(_, l)| l.last_used)
                    .map(|(n, _)| (*n).clone());
                // Loads under way count against the limit as one each; this
                // one's own slot is left out.
                let count = state.slots.len() - 1;
                (
                    count,
                    loaded.iter().map(|(_, l)| l.bytes).sum::<u64>(),
                    victim,
                )
            };
            let over_count = limits.max_loaded > 0 && count + 1 > limits.max_loaded;
            let over_bytes = limits.max_bytes > 0 && used + bytes > limits.max_bytes;
            if !over_count && !over_bytes {
                return Ok(());
            }
            match victim {
                Some(v) => {
                    state.slots.remove(&v);
                    tracing::info!(model = %v, to_load = name, "unloaded to make room");
                }
                None if over_count => {
                    return Err(Failure::Room(format!(
                        "{count} models are loaded and busy (limits.max_loaded_models); retry shortly"
                    )))
                }
                None => {
                    return Err(Failure::Room(format!(
                        "not enough memory for {name:?}: it needs {} MiB, the models in use hold {} of limits.max_model_memory_mb ({} MiB); retry shortly",
                        bytes >> 20,
                        used >> 20,
                        limits.max_bytes >> 20
                    )))
                }
            }
        }
    }

    /// Unload the idle models past their keep-alive; a busy model counts as
    /// used now.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut state = self.state.lock().expect("catalog lock");
        let mut expired = Vec::new();
        for (name, slot) in state.slots.iter_mut() {
            let Slot::Loaded(l) = slot else { continue };
            if !idle(&l.generation) {
                l.last_used = now;
                continue;
            }
            if let KeepAlive::For(d) = l.keep_alive {
                if now.duration_since(l.last_used) >= d {
                    expired.push(name.clone());
                }
            }
        }
        for name in expired {
            state.slots.remove(&name);
            tracing::info!(model = %name, "unloaded: idle past its keep_alive");
        }
    }

    /// Sweep every half second for as long as the catalog lives.
    pub fn spawn_sweeper(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(catalog) => catalog.sweep(),
                    None => return,
                }
            }
        });
    }

    /// Every model, loaded or not, in the config's order.
    pub fn list(&self) -> Vec<Status> {
        let state = self.state.lock().expect("catalog lock");
        let now = (Instant::now(), SystemTime::now());
        self.entries
            .iter()
            .map(|e| {
                let loaded = match state.slots.get(&e.name) {
                    Some(Slot::Loaded(l)) => Some(l),
                    _ => None,
                };
                let expires_at = loaded.and_then(|l| match l.keep_alive {
                    KeepAlive::Forever => None,
                    KeepAlive::For(d) => {
                        let left = (l.last_used + d).saturating_duration_since(now.0);
                        Some(now.1 + left)
                    }
                });
                Status {
                    name: e.name.clone(),
                    path: e.path.clone(),
                    generation: loaded.map(|l| l.generation.clone()),
                    bytes: loaded.map(|l| l.bytes),
                    expires_at,
                    loads: state.loads.get(&e.name).copied().unwrap_or(0),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_reads_ollamas_forms() {
        let d = |s: u64| KeepAlive::For(Duration::from_secs(s));
        assert_eq!(KeepAlive::parse("5m"), Ok(d(300)));
        assert_eq!(KeepAlive::parse("1h30m"), Ok(d(5400)));
        assert_eq!(KeepAlive::parse("0"), Ok(d(0)));
        assert_eq!(KeepAlive::parse("600"), Ok(d(600)));
        assert_eq!(KeepAlive::parse("-1"), Ok(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse("-1m"), Ok(KeepAlive::Forever));
        assert_eq!(
            KeepAlive::parse("300ms"),
            Ok(KeepAlive::For(Duration::from_millis(300)))
        );
        assert!(KeepAlive::parse("soon").is_err());
        assert_eq!(KeepAlive::from_json(&serde_json::json!(0)), Ok(d(0)));
        assert_eq!(
            KeepAlive::from_json(&serde_json::json!(-1)),
            Ok(KeepAlive::Forever)
        );
        assert_eq!(KeepAlive::from_json(&serde_json::json!("10s")), Ok(d(10)));
        assert!(KeepAlive::from_json(&serde_json::json!(true)).is_err());
    }

    /// A loader that loads nothing: every load fails, with the path in
    /// the error; sizes are the path's length in MiB.
    struct Failing;
    impl Loader for Failing {
        fn load(&self, path: &str) -> Result<Generation> {
            Err(Error::Model(format!("no such file: {path}")))
        }
        fn bytes(&self, path: &str) -> Result<u64> {
            Ok((path.len() as u64) << 20)
        }
    }

    fn catalog(max_loaded: usize, max_mib: u64) -> Arc<Catalog> {
        let entries = ["a", "bbbbbbbbbb"]
            .map(|n| Entry {
                name: n.to_string(),
                path: n.to_string(),
                keep_alive: KeepAlive::For(Duration::from_secs(300)),
            })
            .to_vec();
        let limits = Limits {
            max_loaded,
            max_bytes: max_mib << 20,
        };
        Catalog::new(entries, limits, Arc::new(Failing))
    }

    #[tokio::test]
    async fn failed_loads_and_refusals_are_clear_and_leave_nothing_behind() {
        let c = catalog(0, 0);
        let e = c.get("a", None).await.err().unwrap().to_string();
        assert!(
            e.contains("could not be loaded") && e.contains("no such file: a"),
            "{e}"
        );
        assert!(c
            .list()
            .iter()
            .all(|s| s.generation.is_none() && s.loads == 0));
        assert!(matches!(c.get("z", None).await, Err(Error::NotFound(_))));
        // A model larger than the memory limit is refused before loading.
        let c = catalog(0, 5);
        let e = c.get("bbbbbbbbbb", None).await.err().unwrap().to_string();
        assert!(
            e.contains("needs 10 MiB") && e.contains("max_model_memory_mb"),
            "{e}"
        );
        // Concurrent requests share one outcome.
        let c = catalog(0, 0);
        let (x, y) = tokio::join!(c.get("a", None), c.get("a", None));
        assert_eq!(x.err().unwrap().to_string(), y.err().unwrap().to_string());
    }
}
