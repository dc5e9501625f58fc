//! Workload files (TOML) for `hearth bench`: the request mix, the prompts,
//! the generation settings, the load shape (closed loop with N clients, or
//! open loop at a seeded Poisson rate), warm-up and bounds, and the corpus
//! to ingest first. `benches/workloads/` holds the shipped ones.

use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub mix: Mix,
    #[serde(default)]
    pub prompts: Prompts,
    #[serde(default)]
    pub generation: Generation,
    pub load: Load,
    #[serde(default)]
    pub bounds: Bounds,
    #[serde(default)]
    pub corpus: Corpus,
    /// Fine-tune with a LoRA adapter: `/rag` answers with the base model,
    /// `/fine-tuned` with the base plus this adapter.
    #[serde(default)]
    pub adapter: Option<AdapterRun>,
}

/// The adapter of a workload, and the variants it is measured in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterRun {
    /// A GGUF adapter or PEFT directory (`hearth bench random-adapter`
    /// writes one), relative to the current directory.
    pub path: PathBuf,
    #[serde(default = "one")]
    pub scale: f32,
    /// Also run the unified topology with the adapter merged into a second
    /// copy of the weights (`unified-merged`), beside the unified one where
    /// both pipelines share one copy and the adapter is added per request.
    #[serde(default = "yes")]
    pub merged: bool,
}

fn one() -> f32 {
    1.0
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Share of requests that go to `/rag`; the rest go to `/fine-tuned`.
    pub rag: f64,
}

/// Files of prompts, one per line; unset means the built-in set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompts {
    pub rag: Option<PathBuf>,
    pub fine_tuned: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Generation {
    pub max_tokens: usize,
    /// 0 is greedy (the default, so that runs are reproducible).
    pub temperature: f32,
    /// Passages per RAG question.
    pub top_k: usize,
    pub stream: bool,
}

impl Default for Generation {
    fn default() -> Self {
        Self {
            max_tokens: 16,
            temperature: 0.0,
            top_k: 2,
            stream: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Load {
    /// N clients, each sending its next request when the last one ends;
    /// one run per entry of `clients` (throughput against concurrency).
    Closed { clients: Vec<usize> },
    /// Requests arrive at `rate` per second (Poisson, `seed`), whatever
    /// the server's pace.
    Open { rate: f64, seed: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bounds {
    /// Requests sent first and not measured.
    pub warmup: usize,
    /// Measured requests per run.
    pub requests: usize,
    /// A run stops sending after this long, whatever `requests` says.
    pub seconds: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            warmup: 1,
            requests: 8,
            seconds: 120.0,
        }
    }
}

/// Files or directories to ingest before measuring; unset means the
/// built-in corpus (hearth's README and the docs pages its questions are
/// about, compiled in).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corpus {
    #[serde(default)]
    pub paths: Vec<PathBuf>,
}

/// The built-in corpus: what the built-in RAG questions are about.
pub const BUILTIN_CORPUS: &[(&str, &str)] = &[
    ("hearth/README.md", include_str!("../../README.md")),
    (
        "hearth/docs/topologies.md",
        include_str!("../../docs/topologies.md"),
    ),
    (
        "hearth/docs/documents.md",
        include_str!("../../docs/documents.md"),
    ),
    (
        "hearth/docs/models.md",
        include_str!("../../docs/models.md"),
    ),
    (
        "hearth/docs/scaling.md",
        include_str!("../../docs/scaling.md"),
    ),
];

const BUILTIN_RAG: &[&str] = &[
    "Which topologies can hearth run?",
    "How does the gateway route OpenAI requests?",
    "What happens when a child process of hearth up crashes?",
    "Where does hearth keep its document store?",
    "How are the default models downloaded?",
    "What does GET /topology report?",
    "How many rag processes may write one store?",
    "What does the per-model topology start?",
];

const BUILTIN_FINE_TUNED: &[&str] = &[
    "Write one sentence about the sea.",
    "Name three fruits.",
    "What is the capital of France?",
    "Give one tip for writing clear code.",
    "Describe a cat in five words.",
    "What colour is the sky on a clear day?",
];

/// Which pipeline a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pipeline {
    Rag,
    FineTuned,
}

impl Pipeline {
    pub fn path(self) -> &'static str {
        match self {
            Pipeline::Rag => "/rag",
            Pipeline::FineTuned => "/fine-tuned",
        }
    }
}

/// One request of a run, decided before the run starts.
#[derive(Debug, Clone)]
pub struct Planned {
    pub pipeline: Pipeline,
    pub body: serde_json::Value,
}

impl Workload {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let workload: Workload = toml::from_str(&text)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
        workload.validate()?;
        Ok(workload)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(format!("workload {}: {m}", self.name)));
        if !(0.0..=1.0).contains(&self.mix.rag) {
            return bad(format!(
                "mix.rag must be between 0 and 1, got {}",
                self.mix.rag
            ));
        }
        if self.bounds.requests == 0 || self.bounds.seconds <= 0.0 {
            return bad("bounds.requests and bounds.seconds must be positive".into());
        }
        if self.adapter.as_ref().is_some_and(|a| !a.scale.is_finite()) {
            return bad("adapter.scale must be a finite number".into());
        }
        if self.generation.max_tokens == 0 || self.generation.top_k == 0 {
            return bad("generation.max_tokens and generation.top_k must be positive".into());
        }
        match &self.load {
            Load::Closed { clients } if clients.is_empty() || clients.contains(&0) => {
                bad("load.clients must list positive client counts".into())
            }
            Load::Open { rate, .. } if !(rate.is_finite() && *rate > 0.0) => {
                bad(format!("load.rate must be positive, got {rate}"))
            }
            _ => Ok(()),
        }
    }

    fn prompts(&self, file: &Option<PathBuf>, builtin: &[&str]) -> Result<Vec<String>> {
        let Some(path) = file else {
            return Ok(builtin.iter().map(|s| s.to_string()).collect());
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if lines.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{} has no prompts",
                path.display()
            )));
        }
        Ok(lines)
    }

    /// `count` requests, the same for every topology and repeat: the
    /// pipeline drawn with a fixed seed at the mix's share, prompts taken
    /// in turn.
    pub fn plan(&self, count: usize, seed: u64) -> Result<Vec<Planned>> {
        let rag = self.prompts(&self.prompts.rag, BUILTIN_RAG)?;
        let fine_tuned = self.prompts(&self.prompts.fine_tuned, BUILTIN_FINE_TUNED)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut r, mut f) = (0, 0);
        Ok((0..count)
            .map(|_| {
                if rng.random::<f64>() < self.mix.rag {
                    r += 1;
                    self.request(Pipeline::Rag, &rag[(r - 1) % rag.len()])
                } else {
                    f += 1;
                    self.request(Pipeline::FineTuned, &fine_tuned[(f - 1) % fine_tuned.len()])
                }
            })
            .collect())
    }

    /// `count` requests to one pipeline, its prompts in turn.
    pub fn pipeline_plan(&self, pipeline: Pipeline, count: usize) -> Result<Vec<Planned>> {
        let prompts = match pipeline {
            Pipeline::Rag => self.prompts(&self.prompts.rag, BUILTIN_RAG)?,
            Pipeline::FineTuned => self.prompts(&self.prompts.fine_tuned, BUILTIN_FINE_TUNED)?,
        };
        Ok((0..count)
            .map(|i| self.request(pipeline, &prompts[i % prompts.len()]))
            .collect())
    }

    pub fn request(&self, pipeline: Pipeline, prompt: &str) -> Planned {
        let g = &self.generation;
        let mut body = serde_json::json!({
            "max_tokens": g.max_tokens,
            "temperature": g.temperature,
            "stream": g.stream,
        });
        match pipeline {
            Pipeline::Rag => {
                body["question"] = prompt.into();
                body["top_k"] = g.top_k.into();
            }
            Pipeline::FineTuned => {
                body["messages"] = serde_json::json!([{ "role": "user", "content": prompt }]);
            }
        }
        Planned { pipeline, body }
    }

    /// The documents to ingest: (id, text).
    pub fn corpus(&self) -> Result<Vec<(String, String)>> {
        if self.corpus.paths.is_empty() {
            return Ok(BUILTIN_CORPUS
                .iter()
                .map(|(id, text)| (id.to_string(), text.to_string()))
                .collect());
        }
        let mut docs = Vec::new();
        for file in crate::store::extract::collect_files(&self.corpus.paths)? {
            let (content, _) = crate::store::extract::read_file(&file)?;
            docs.push((file.display().to_string(), content.text));
        }
        Ok(docs)
    }
}

/// Arrival offsets (seconds from the start) of a Poisson process at `rate`.
pub fn poisson_arrivals(rate: f64, count: usize, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = 0.0;
    (0..count)
        .map(|_| {
            // Inverse transform of an exponential inter-arrival time.
            let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            t += -u.ln() / rate;
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_workloads_parse_and_plans_are_reproducible() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/workloads");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let w = Workload::load(&entry.unwrap().path()).unwrap();
            let a = w.plan(20, 1).unwrap();
            let b = w.plan(20, 1).unwrap();
            assert!(a.iter().zip(&b).all(|(x, y)| x.body == y.body));
            seen += 1;
        }
        assert!(seen >= 3);
    }

    #[test]
    fn poisson_arrivals_have_the_right_mean_rate() {
        let arrivals = poisson_arrivals(2.0, 4000, 7);
        let rate = arrivals.len() as f64 / arrivals.last().unwrap();
        assert!((rate - 2.0).abs() < 0.15, "{rate}");
        assert!(arrivals.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn bad_workloads_name_the_problem() {
        let w: Workload = toml::from_str(
            "name = \"x\"\n[mix]\nrag = 1.5\n[load]\nkind = \"closed\"\nclients = [1]\n",
        )
        .unwrap();
        assert!(w.validate().unwrap_err().to_string().contains("mix.rag"));
        assert!(toml::from_str::<Workload>("name = \"x\"\nbogus = 1\n").is_err());
    }
}
