//! The RAG pipeline: embed the question, search the index, fit the best
//! passages into the prompt (dropping the lowest-scoring ones until prompt
//! and answer fit the context window), and generate.

use crate::config::RetrievalConfig;
use crate::engine::blocking;
use crate::engine::{Embedding, Generation, GenerationStream, Prompt};
use crate::error::{Error, Result};
use crate::models::llm::chat::Message;
use crate::models::llm::sampling::SamplingParams;
use crate::store::{DocumentStore, Passage};
use std::sync::Arc;
use std::time::Instant;

/// Retrieval alone: `/search`, and RAG's first two steps.
#[derive(Clone)]
pub struct Retriever {
    store: Arc<DocumentStore>,
    embedder: Embedding,
    config: RetrievalConfig,
    max_query_chars: usize,
}

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
            config,
            max_query_chars,
        }
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

    /// The `top_k` passages nearest to `query`, through the index or, with
    /// `exact`, by comparing with every chunk.
    pub async fn search(
        &self,
        query: &str,
        top_k: Option<usize>,
        exact: bool,
    ) -> Result<Retrieved> {
        let k = self.check(query, top_k)?;
        let started = Instant::now();
        let query = self
            .embedder
            .embed(vec![query.to_string()])
            .await?
            .pop()
            .ok_or_else(|| Error::Unavailable("the embedder returned nothing".into()))?;
        let embed_ms = ms(started);
        let searched = Instant::now();
        let store = self.store.clone();
        let ef = self.config.ef_search;
        let passages = blocking(move || {
            if exact {
                store.search_exact(&query, k)
            } else {
                store.search(&query, k, ef)
            }
        })
        .await?;
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

    pub async fn answer(
        &self,
        question: &str,
        top_k: Option<usize>,
        params: SamplingParams,
    ) -> Result<RagAnswer> {
        let started = Instant::now();
        let params = self.generator.check(params)?;
        let retrieved = self.retriever.search(question, top_k, false).await?;
        let found = retrieved.passages.len();
        let (prompt, passages) = self
            .fit_prompt(question, retrieved.passages, params.get().max_tokens)
            .await?;
        let dropped = found - passages.len();
        let stream = self.generator.start(Prompt::Tokens(prompt), params)?;
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
            let messages = vec![
                Message::new("system", self.retriever.config.system_prompt.clone()),
                Message::new("user", user),
            ];
            let tokens = self.generator.encode_chat(messages).await?;
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
