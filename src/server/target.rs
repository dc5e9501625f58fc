//! What a request's `model` names, on every route that takes one (OpenAI's,
//! Anthropic's, Ollama's): `hearth-rag`, the fine-tuned pipeline, one of
//! its model's adapters, or an LLM by name; and running a generation on
//! it ([`run`]), which every API's generation route shares.

use super::error::ApiError;
use super::fields::{invalid, RetrievalFields};
use crate::engine::catalog::KeepAlive;
use crate::engine::{Generation, GenerationStream};
use crate::models::llm::sampling::SamplingParams;
use crate::pipelines::fine_tuned::{FineTuned, Input};
use crate::pipelines::Services;
use crate::roles::{FINE_TUNED_MODEL, RAG_MODEL};
use crate::store::Passage;

/// What a `model` id runs.
pub enum Target {
    Rag,
    Generate(FineTuned),
}

pub async fn target(services: &Services, model: &str) -> Result<Target, ApiError> {
    target_kept(services, model, None).await
}

/// [`target`], with a request's keep-alive for a model of `models.llms`
/// (Ollama's `keep_alive`), which is loaded here when it is not.
pub async fn target_kept(
    services: &Services,
    model: &str,
    keep_alive: Option<KeepAlive>,
) -> Result<Target, ApiError> {
    if model == RAG_MODEL {
        services.rag()?;
        return Ok(Target::Rag);
    }
    if model == FINE_TUNED_MODEL {
        return Ok(Target::Generate(services.fine_tuned()?.clone()));
    }
    // A LoRA adapter on the fine-tuned pipeline's model.
    if let Ok(pipeline) = services.fine_tuned() {
        if pipeline.model_name() == model {
            return Ok(Target::Generate(pipeline.clone()));
        }
        if let Ok(adapted) = pipeline.select(model) {
            return Ok(Target::Generate(adapted));
        }
    }
    // An LLM by name: the fine-tuned pipeline's first, as in every role.
    let by_name = services
        .fine_tuned()
        .ok()
        .map(|f| f.generator().clone())
        .into_iter()
        .chain(services.rag().ok().map(|r| r.generator().clone()))
        .chain(services.generator().ok().cloned())
        .find(|g| g.name() == model);
    if let Some(g) = by_name {
        return Ok(Target::Generate(FineTuned::new(g)));
    }
    // One of the LLMs served by name, loaded now if it is not.
    match services.catalog().filter(|c| c.has(model)) {
        Some(catalog) => Ok(Target::Generate(FineTuned::new(
            catalog.get(model, keep_alive).await?,
        ))),
        None => Err(ApiError::model_not_found(model)),
    }
}

/// The LLM a request's `model` names, for the routes that use its
/// tokenizer and template rather than a pipeline (`/tokenize`, ...):
/// `hearth-rag` is its generator. Absent: the fine-tuned pipeline's LLM,
/// else the RAG generator, else this process's one LLM.
pub async fn llm(services: &Services, model: Option<&str>) -> Result<Generation, ApiError> {
    match model {
        Some(model) => Ok(match target(services, model).await? {
            Target::Rag => services.rag()?.generator().clone(),
            Target::Generate(pipeline) => pipeline.generator().clone(),
        }),
        None => services
            .fine_tuned()
            .map(|f| f.generator().clone())
            .or_else(|_| services.rag().map(|r| r.generator().clone()))
            .or_else(|_| services.generator().cloned())
            .map_err(ApiError::from),
    }
}

/// A generation under way: its events, and the passages in its prompt
/// when `hearth-rag` answered.
pub struct Started {
    pub stream: GenerationStream,
    pub sources: Option<Vec<Passage>>,
}

/// Run `input` on what `target` names, as every API's generation route
/// does: `hearth-rag` answers the last user message (or the prompt) from
/// the documents, with `retrieval`'s fields (in a collection the caller
/// may read), and calls no tools; a
/// generating pipeline continues the conversation or the prompt (and
/// refuses retrieval fields). `field` is the API's name for the
/// conversation (`messages`, `input`); `terms` renames a pipeline's
/// refusal into the API's field names.
pub async fn run(
    services: &Services,
    target: Target,
    input: Input,
    params: SamplingParams,
    (caller, retrieval): (&super::auth::Caller, &RetrievalFields),
    field: &'static str,
    terms: impl Fn(ApiError) -> ApiError,
) -> Result<Started, ApiError> {
    let pipeline = match target {
        Target::Generate(pipeline) => pipeline,
        Target::Rag => {
            let question = match input {
                Input::Tools(..) => {
                    return Err(invalid(
                        "tools",
                        "hearth-rag answers from the documents and calls no tools; use the fine-tuned pipeline's model",
                    ))
                }
                Input::Prompt(prompt) => prompt,
                Input::Messages(messages) => messages
                    .into_iter()
                    .rev()
                    .find(|m| m.role == "user")
                    .map(|m| m.content)
                    .ok_or_else(|| invalid(field, "hearth-rag needs a user message to answer"))?,
            };
            let answer = services
                .rag()?
                .answer(&question, &retrieval.options(caller, None, false)?, params)
                .await
                .map_err(|e| terms(e.into()))?;
            return Ok(Started {
                stream: answer.stream,
                sources: Some(answer.passages),
            });
        }
    };
    retrieval.refuse_without_retrieval()?;
    let stream = pipeline
        .generate(input, params)
        .await
        .map_err(|e| terms(e.into()))?;
    Ok(Started {
        stream,
        sources: None,
    })
}
