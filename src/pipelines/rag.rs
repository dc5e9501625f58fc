//! The RAG pipeline: embed the question, search the index, fit the best
//! passages into the prompt (dropping the lowest-scoring ones until prompt
//! and answer fit the context window), and generate.

use crate::config::{RetrievalConfig, SearchMode};
use crate::engine::blocking;
use crate::engine::{Embedding, Generation, GenerationStream, Prompt, RerankWorker};
use crate::error::{Error, Result};
use crate::models::llm::message::Message;
use crate::models::llm::sampling::SamplingParams;
use crate::store::{DocumentStore, Filter, Passage, Query, SearchSettings};
use std::sync::Arc;
use std::time::Instant;

/// Retrieval alone: `/search`, and RAG's first two steps.
#[derive(Clone)]
pub struct Retriever {
    store: Arc<DocumentStore>,
    embedder: Embedding,
    /// Re-scores the best candidates, when configured.
    reranker: Option<RerankWorker>,
    config: RetrievalConfig,
    max_query_chars: usize,
}

/// What a request may say about retrieval; what it leaves unset comes from
/// the config.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    /// The collection searched (default: `default`).
    pub collection: Option<String>,
    pub top_k: Option<usize>,
    pub mode: Option<SearchMode>,
    /// A filter object (see `store::filter`).
    pub filter: Option<serde_json::Value>,
    pub min_score: Option<f32>,
    /// The dense list by comparing with every chunk, not through the index.
    pub exact: bool,
    /// Whether the configured reranker re-scores the candidates (default:
    /// yes, when one is configured).
    pub rerank: Option<bool>,
}

/// A search's options checked once: the values it runs with.
struct SearchPlan {
    k: usize,
    /// How many passages to retrieve before reranking (`k` without).
    candidates: usize,
    rerank: Option<RerankWorker>,
    mode: SearchMode,
    filter: Option<Filter>,
    min_score: Option<f32>,
    exact: bool,
}

/// What the system prompt adds when no passage was found but the answer
/// must follow an output format.
const NOTHING_FOUND: &str =
    "\nNo passage of the documents matches this question: say that the documents do not cover it.";

/// What a RAG answer says when no passage is left (a filter that matches
/// nothing, or none above `min_score`), instead of a guess.
pub const NOT_COVERED: &str =
    "The documents I can search do not cover this question, so I cannot answer it from them.";

/// Passages found for a query, best first, and what finding them cost.
pub struct Retrieved {
    pub passages: Vec<Passage>,
    pub embed_ms: f64,
    pub search_ms: f64,
}

impl Retriever {
    pub fn new(
        store: Arc<DocumentStore>,
        embedder: Embedding,
        config: RetrievalConfig,
        max_query_chars: usize,
    ) -> Self {
        Self {
            store,
            embedder,
            reranker: None,
            config,
            max_query_chars,
        }
    }

    /// Re-score the best `retrieval.rerank_candidates` passages of every
    /// search with this cross-encoder and keep the best `top_k` of them.
    pub fn with_reranker(mut self, reranker: RerankWorker) -> Self {
        self.reranker = Some(reranker);
        self
    }

    /// The cross-encoder, when one is configured (`/v1/rerank` uses it
    /// directly).
    pub fn reranker(&self) -> Option<&RerankWorker> {
        self.reranker.as_ref()
    }

    /// Check a query and a requested `top_k`; return the `top_k` to use.
    pub fn check(&self, query: &str, top_k: Option<usize>) -> Result<usize> {
        if query.trim().is_empty() {
            return Err(Error::InvalidInput("the query is empty".into()));
        }
        let chars = query.chars().count();
        if chars > self.max_query_chars {
            return Err(Error::TooLarge(format!(
                "the query has {chars} characters; at most {} are accepted",
                self.max_query_chars
            )));
        }
        let k = top_k.unwrap_or(self.config.top_k);
        if k == 0 || k > self.config.max_top_k {
            return Err(Error::InvalidInput(format!(
                "top_k must be between 1 and {}, got {k}",
                self.config.max_top_k
            )));
        }
        Ok(k)
    }

    /// Check a query and its options, filling what they leave unset.
    fn check_options(&self, query: &str, options: &SearchOptions) -> Result<SearchPlan> {
        let k = self.check(query, options.top_k)?;
        let min_score = options.min_score.or(self.config.min_score);
        if let Some(m) = min_score {
            if !(-1.0..=1.0).contains(&m) {
                return Err(Error::InvalidInput(format!(
                    "min_score is a cosine similarity, between -1 and 1; got {m}"
                )));
            }
        }
        let rerank = match (options.rerank, &self.reranker) {
            (Some(true), None) => {
                return Err(Error::InvalidInput(
                    "rerank: no reranker is configured (models.reranker)".into(),
                ))
            }
            (Some(false), _) => None,
            (_, reranker) => reranker.clone(),
        };
        let candidates = match rerank {
            Some(_) => k.max(self.config.rerank_candidates),
            None => k,
        };
        Ok(SearchPlan {
            k,
            candidates,
            rerank,
            mode: options.mode.unwrap_or(self.config.mode),
            filter: options.filter.as_ref().map(Filter::parse).transpose()?,
            min_score,
            exact: options.exact,
        })
    }

    /// The best passages for `query` as `options` ask (dense, lexical or
    /// hybrid; filtered; above a score), best first.
    pub async fn search(&self, query: &str, options: &SearchOptions) -> Result<Retrieved> {
        let SearchPlan {
            k,
            candidates,
            rerank,
            mode,
            filter,
            min_score,
            exact,
        } = self.check_options(query, options)?;
        let started = Instant::now();
        // A lexical search needs no embedding, unless a score threshold
        // (a cosine similarity) is to be checked.
        let vector = if mode != SearchMode::Lexical || min_score.is_some() {
            Some(
                self.embedder
                    .embed(vec![query.to_string()])
                    .await?
                    .pop()
                    .ok_or_else(|| Error::Unavailable("the embedder returned nothing".into()))?,
            )
        } else {
            None
        };
        let embed_ms = ms(started);
        let searched = Instant::now();
        let store = self.store.clone();
        let settings = SearchSettings::of(&self.config);
        let text = query.to_string();
        let collection = options
            .collection
            .clone()
            .unwrap_or_else(|| crate::store::DEFAULT_COLLECTION.to_string());
        let mut passages = blocking(move || {
            store.retrieve(
                &Query {
                    collection: &collection,
                    text: &text,
                    vector: vector.as_deref(),
                    mode,
                    k: candidates,
                    filter: filter.as_ref(),
                    exact,
                    min_score,
                },
                &settings,
            )
        })
        .await?;
        if let Some(reranker) = &rerank {
            if !passages.is_empty() {
                let texts = passages.iter().map(|p| p.text.clone()).collect();
                let scores = reranker.score(query.to_string(), texts).await?;
                for (p, s) in passages.iter_mut().zip(scores) {
                    p.rerank_score = Some(s);
                    p.score = s;
                }
                passages.sort_by(|a, b| b.score.total_cmp(&a.score));
            }
        }
        passages.truncate(k);
        Ok(Retrieved {
            passages,
            embed_ms,
            search_ms: ms(searched),
        })
    }
}

/// Retrieval plus generation.
#[derive(Clone)]
pub struct Rag {
    retriever: Retriever,
    generator: Generation,
    template: Arc<minijinja::Environment<'static>>,
}

/// A RAG answer under way: the passages in its prompt, the retrieval
/// timings, and the generation's event stream.
pub struct RagAnswer {
    pub passages: Vec<Passage>,
    pub embed_ms: f64,
    pub search_ms: f64,
    /// Passages retrieved but left out so the prompt fits the context.
    pub dropped: usize,
    pub started: Instant,
    pub stream: GenerationStream,
}

impl Rag {
    pub fn new(retriever: Retriever, generator: Generation) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.add_template_owned("user", retriever.config.prompt_template.clone())
            .map_err(|e| Error::InvalidInput(format!("retrieval.prompt_template: {e}")))?;
        Ok(Self {
            retriever,
            generator,
            template: Arc::new(env),
        })
    }

    pub fn retriever(&self) -> &Retriever {
        &self.retriever
    }

    pub fn generator(&self) -> &Generation {
        &self.generator
    }

    /// Retrieve passages for `question` and start generating the answer;
    /// when no passage is found, the answer is [`NOT_COVERED`] and no model
    /// runs (unless the answer must follow an output format: then the
    /// model answers in it, told that the documents hold nothing on the
    /// question).
    pub async fn answer(
        &self,
        question: &str,
        options: &SearchOptions,
        params: SamplingParams,
    ) -> Result<RagAnswer> {
        let started = Instant::now();
        let params = self.generator.check(params)?;
        let retrieved = self.retriever.search(question, options).await?;
        // With an output format, the answer must still follow it: the model
        // runs, told that nothing was found.
        let constrained = params.get().format.is_some();
        if retrieved.passages.is_empty() && !constrained {
            return Ok(RagAnswer {
                passages: Vec::new(),
                embed_ms: retrieved.embed_ms,
                search_ms: retrieved.search_ms,
                dropped: 0,
                started,
                stream: GenerationStream::fixed(NOT_COVERED),
            });
        }
        let found = retrieved.passages.len();
        let (prompt, passages) = self
            .fit_prompt(question, retrieved.passages, params.get().max_tokens)
            .await?;
        let dropped = found - passages.len();
        let stream = self.generator.start(Prompt::Tokens(prompt), params).await?;
        Ok(RagAnswer {
            passages,
            embed_ms: retrieved.embed_ms,
            search_ms: retrieved.search_ms,
            dropped,
            started,
            stream,
        })
    }

    /// The prompt's tokens with as many of the best passages as fit.
    async fn fit_prompt(
        &self,
        question: &str,
        mut passages: Vec<Passage>,
        max_tokens: usize,
    ) -> Result<(Vec<u32>, Vec<Passage>)> {
        let budget = self.generator.budget();
        let (context, limit) = (budget.context, budget.limit(max_tokens));
        loop {
            let user = self
                .template
                .get_template("user")
                .and_then(|t| {
                    t.render(minijinja::context! { question => question, passages => &passages })
                })
                .map_err(|e| Error::InvalidInput(format!("retrieval.prompt_template: {e}")))?;
            let mut system = self.retriever.config.system_prompt.clone();
            if passages.is_empty() {
                system.push_str(NOTHING_FOUND);
            }
            let messages = vec![Message::new("system", system), Message::new("user", user)];
            let tokens = self.generator.encode_chat(messages, Vec::new()).await?;
            if tokens.len() <= limit {
                return Ok((tokens, passages));
            }
            if passages.pop().is_none() {
                return Err(Error::TooLarge(format!(
                    "the question alone needs {} prompt tokens; with max_tokens {max_tokens} at most {limit} fit the context window of {context}",
                    tokens.len()
                )));
            }
        }
    }
}

/// Milliseconds since `since`.
pub fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
