//! The replicas behind one remote process's URL, and which one takes the
//! next request.
//!
//! In Kubernetes a role's replicas sit behind one (headless) Service name
//! that resolves to every ready pod's address. A Service balances per
//! connection, and hearth's clients keep connections alive, so balancing
//! is done here, per request:
//!
//! - the URL's host is resolved to all its addresses, and again every
//!   [`RESOLVE_EVERY`] (pods come and go); an IP literal is one replica;
//! - the next request goes to the replica with the fewest requests in
//!   flight (a streaming generation counts until its stream ends), ties
//!   taken in turn;
//! - a replica that fails (no connection, or lost mid-answer) is taken out
//!   for [`EJECT_FOR`], as nginx's `max_fails`/`fail_timeout` do; when every
//!   replica is out, the one back soonest is tried anyway.
//!
//! A leaf module: addresses and counters, no HTTP.

use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a name is resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// How long a failed replica is left out.
pub const EJECT_FOR: Duration = Duration::from_secs(10);

struct Replica {
    addr: SocketAddr,
    in_flight: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
    failures: usize,
    out_until: Option<Instant>,
}

impl Replica {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            in_flight: Arc::default(),
            served: Arc::default(),
            failures: 0,
            out_until: None,
        }
    }
}

struct State {
    replicas: Vec<Replica>,
    resolved_at: Option<Instant>,
    /// Where the next tie-break starts.
    turn: usize,
}

/// The replicas of one remote process, shared by every request to it.
pub struct Replicas {
    /// The URL as configured (`http://hearth-embed:8080`).
    url: String,
    scheme: String,
    host: String,
    port: u16,
    state: Mutex<State>,
}

/// One replica, as `/topology` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplicaState {
    pub url: String,
    pub in_flight: usize,
    /// Requests sent to it so far.
    pub served: usize,
    /// Failures in a row.
    pub failures: usize,
    /// It is left out for this many more seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_for_s: Option<f64>,
}

/// The replica a request goes to; counted in flight until dropped.
pub struct Lease {
    /// `http://ADDRESS:PORT`, without a trailing slash.
    pub base: String,
    addr: SocketAddr,
    in_flight: Arc<AtomicUsize>,
    pool: Arc<Replicas>,
}

impl Lease {
    /// The replica answered: it is healthy again.
    pub fn succeeded(&self) {
        self.pool.record(self.addr, true);
    }

    /// The replica did not answer, or lost the request mid-answer.
    pub fn failed(&self) {
        self.pool.record(self.addr, false);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Replicas {
    /// The replicas behind `url` (`http://host:port`); resolved on first use.
    pub fn new(url: &str) -> Arc<Self> {
        let url = url.trim_end_matches('/').to_string();
        // An unparsable URL keeps no host: it resolves to nothing, and a
        // request to it is a clear 502.
        let parsed = reqwest::Url::parse(&url).ok();
        let scheme = parsed.as_ref().map_or("http", |u| u.scheme()).to_string();
        let port = parsed
            .as_ref()
            .and_then(|u| u.port_or_known_default())
            .unwrap_or(80);
        let host = parsed
            .as_ref()
            .and_then(|u| u.host_str())
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let replicas = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![Replica::new(SocketAddr::new(ip, port))],
            Err(_) => Vec::new(),
        };
        Arc::new(Self {
            scheme,
            host,
            port,
            state: Mutex::new(State {
                replicas,
                resolved_at: None,
                turn: 0,
            }),
            url,
        })
    }

    /// The URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn is_literal(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }

    /// Resolve the name again if it is due (or `force`); a failed lookup
    /// keeps the replicas known so far.
    pub async fn refresh(&self, force: bool) {
        if self.is_literal() {
            return;
        }
        let due = {
            let state = self.state.lock().expect("replicas lock");
            force
                || state
                    .resolved_at
                    .is_none_or(|t| t.elapsed() >= RESOLVE_EVERY)
        };
        if !due {
            return;
        }
        let found: Vec<SocketAddr> = match tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
        {
            Ok(addrs) => {
                let mut addrs: Vec<SocketAddr> = addrs.collect();
                addrs.sort();
                addrs.dedup();
                addrs
            }
            Err(e) => {
                tracing::warn!(host = %self.host, "resolving the replicas of {}: {e}", self.url);
                Vec::new()
            }
        };
        let mut state = self.state.lock().expect("replicas lock");
        state.resolved_at = Some(Instant::now());
        if found.is_empty() {
            return;
        }
        let mut old = std::mem::take(&mut state.replicas);
        state.replicas = found
            .into_iter()
            .map(|addr| match old.iter().position(|r| r.addr == addr) {
                Some(i) => old.swap_remove(i),
                None => Replica::new(addr),
            })
            .collect();
    }

    /// The replica the next request goes to, or `None` when the name
    /// resolves to nothing.
    pub async fn pick(self: &Arc<Self>) -> Option<Lease> {
        self.refresh(false).await;
        self.choose(&[])
    }

    /// As [`Self::pick`], avoiding the replicas in `tried` while others
    /// remain (a retry after a failed connection).
    pub fn pick_other(self: &Arc<Self>, tried: &[String]) -> Option<Lease> {
        self.choose(tried)
    }

    fn choose(self: &Arc<Self>, tried: &[String]) -> Option<Lease> {
        let now = Instant::now();
        let mut state = self.state.lock().expect("replicas lock");
        let n = state.replicas.len();
        if n == 0 {
            return None;
        }
        let base = |r: &Replica| format!("{}://{}", self.scheme, r.addr);
        let candidates: Vec<usize> = (0..n)
            .map(|i| (state.turn + i) % n)
            .filter(|&i| !tried.contains(&base(&state.replicas[i])))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let up: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| state.replicas[i].out_until.is_none_or(|t| t <= now))
            .collect();
        let chosen = if up.is_empty() {
            // Every replica is out: try the one back soonest.
            *candidates
                .iter()
                .min_by_key(|&&i| state.replicas[i].out_until)
                .expect("candidates is not empty")
        } else {
            *up.iter()
                .min_by_key(|&&i| state.replicas[i].in_flight.load(Ordering::Relaxed))
                .expect("up is not empty")
        };
        state.turn = (chosen + 1) % n;
        let replica = &state.replicas[chosen];
        replica.in_flight.fetch_add(1, Ordering::Relaxed);
        replica.served.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            base: base(replica),
            addr: replica.addr,
            in_flight: replica.in_flight.clone(),
            pool: self.clone(),
        })
    }

    fn record(&self, addr: SocketAddr, ok: bool) {
        let mut state = self.state.lock().expect("replicas lock");
        let Some(replica) = state.replicas.iter_mut().find(|r| r.addr == addr) else {
            return;
        };
        if ok {
            replica.failures = 0;
            replica.out_until = None;
        } else {
            replica.failures += 1;
            replica.out_until = Some(Instant::now() + EJECT_FOR);
            tracing::warn!(
                replica = %addr,
                "a replica of {} failed; left out for {} s",
                self.url,
                EJECT_FOR.as_secs()
            );
        }
    }

    /// Every replica known now.
    pub fn states(&self) -> Vec<ReplicaState> {
        let now = Instant::now();
        let state = self.state.lock().expect("replicas lock");
        state
            .replicas
            .iter()
            .map(|r| ReplicaState {
                url: format!("{}://{}", self.scheme, r.addr),
                in_flight: r.in_flight.load(Ordering::Relaxed),
                served: r.served.load(Ordering::Relaxed),
                failures: r.failures,
                out_for_s: r
                    .out_until
                    .filter(|t| *t > now)
                    .map(|t| (t - now).as_secs_f64()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(addrs: &[&str]) -> Arc<Replicas> {
        let pool = Replicas::new("http://replicas.test:8080");
        pool.state.lock().unwrap().replicas = addrs
            .iter()
            .map(|a| Replica::new(a.parse().unwrap()))
            .collect();
        pool.state.lock().unwrap().resolved_at = Some(Instant::now());
        pool
    }

    #[test]
    fn urls_split_into_host_and_port() {
        let p = Replicas::new("http://hearth-embed:8080/");
        assert_eq!(
            (p.host.as_str(), p.port, p.url()),
            ("hearth-embed", 8080, "http://hearth-embed:8080")
        );
        let p = Replicas::new("http://127.0.0.1:9");
        assert_eq!(p.states().len(), 1);
        let p = Replicas::new("http://[::1]:7");
        assert_eq!((p.host.as_str(), p.port), ("::1", 7));
        assert_eq!(p.states()[0].url, "http://[::1]:7");
        assert_eq!(Replicas::new("https://x").port, 443);
    }

    #[test]
    fn the_least_busy_replica_takes_the_next_request_and_ties_alternate() {
        let p = pool(&["127.0.0.2:8080", "127.0.0.3:8080"]);
        let a = p.choose(&[]).unwrap();
        let b = p.choose(&[]).unwrap();
        assert_ne!(a.base, b.base, "two requests, two replicas");
        drop(a);
        let c = p.choose(&[]).unwrap();
        assert_eq!(c.base, "http://127.0.0.2:8080", "the idle one");
        drop((b, c));
        let firsts: Vec<String> = (0..4)
            .map(|_| p.choose(&[]).unwrap().base.clone())
            .collect();
        assert_ne!(firsts[0], firsts[1], "idle replicas are taken in turn");
        assert_ne!(firsts[1], firsts[2]);
    }

    #[test]
    fn a_failed_replica_is_left_out_then_tried_when_nothing_else_is_left() {
        let p = pool(&["127.0.0.2:8080", "127.0.0.3:8080"]);
        let lease = p.choose(&[]).unwrap();
        let failed = lease.base.clone();
        lease.failed();
        drop(lease);
        for _ in 0..5 {
            assert_ne!(p.choose(&[]).unwrap().base, failed);
        }
        assert_eq!(
            p.states().iter().filter(|s| s.out_for_s.is_some()).count(),
            1
        );
        let other = p.choose(&[]).unwrap();
        let retry = p.pick_other(std::slice::from_ref(&other.base)).unwrap();
        assert_eq!(retry.base, failed, "the only one not tried yet");
        assert!(p
            .pick_other(&[other.base.clone(), failed.clone()])
            .is_none());
        retry.succeeded();
        assert!(p.states().iter().all(|s| s.out_for_s.is_none()));
    }
}
