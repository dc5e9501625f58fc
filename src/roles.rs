//! Roles, declared once: what one `hearth serve` process runs ([`Role`]),
//! the parts of hearth a role may serve ([`Capability`]: each with its
//! routes and model id), and the one table between them ([`Role::serves`]).
//!
//! Everything that asks "who serves this?" reads the table: which parts
//! `pipelines::Services::load` loads, the error a process gives for a part
//! it does not run, the gateway's routing by path, the nginx
//! configuration, the OpenAI model ids, and what `/info` and `/topology`
//! say each process serves. A leaf module: it depends on
//! nothing else in hearth.

/// What one `hearth serve` process runs. The role decides which components
/// are local, which are remote clients, and so which routes it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Both pipelines, the store and the embedder: the unified server.
    All,
    /// The RAG pipeline: store, index, embedder and generator (each model
    /// local or remote).
    Rag,
    /// The fine-tuned pipeline alone.
    FineTuned,
    /// The embedder alone (`/embed`, `/v1/embeddings`).
    Embed,
    /// One LLM alone (`/generate`); with `--model fine-tuned` it also
    /// serves the fine-tuned pipeline's routes.
    Generate,
    /// The front door: a reverse proxy to `rag` and `fine-tuned` processes.
    Gateway,
}

/// Which configured LLM a `generate` process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LlmSlot {
    RagGenerator,
    FineTuned,
}

/// A part of hearth a process may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// The document store and retrieval (owned by one process: it writes
    /// the store).
    Documents,
    /// The embedding model.
    Embeddings,
    /// The RAG pipeline.
    Rag,
    /// The fine-tuned pipeline.
    FineTuned,
    /// One LLM for other hearth processes (token ids in, events out).
    Generator,
}

use Capability::*;

/// The table: which parts each role serves. A `generate` process with
/// `--model fine-tuned` also serves [`Capability::FineTuned`].
const TABLE: &[(Role, &[Capability])] = &[
    (Role::All, &[Documents, Embeddings, Rag, FineTuned]),
    (Role::Rag, &[Documents, Embeddings, Rag]),
    (Role::FineTuned, &[FineTuned]),
    (Role::Embed, &[Embeddings]),
    (Role::Generate, &[Generator]),
    (Role::Gateway, &[]),
];

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Rag => "rag",
            Role::FineTuned => "fine-tuned",
            Role::Embed => "embed",
            Role::Generate => "generate",
            Role::Gateway => "gateway",
        }
    }

    /// What a process of this role serves (a `generate` process: for its
    /// `slot`).
    pub fn serves(self, slot: LlmSlot) -> Vec<Capability> {
        let mut parts = TABLE
            .iter()
            .find(|(role, _)| *role == self)
            .map(|(_, parts)| parts.to_vec())
            .unwrap_or_default();
        if self == Role::Generate && slot == LlmSlot::FineTuned {
            parts.push(FineTuned);
        }
        parts
    }

    /// Whether this role serves `part` (whatever its slot).
    pub fn may_serve(self, part: Capability) -> bool {
        self.serves(LlmSlot::FineTuned).contains(&part)
    }
}

impl LlmSlot {
    pub fn name(self) -> &'static str {
        match self {
            LlmSlot::RagGenerator => "rag-generator",
            LlmSlot::FineTuned => "fine-tuned",
        }
    }
}

/// A process behind the front door of the `gateway` topology: the `rag`
/// one or the `fine-tuned` one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Rag,
    FineTuned,
}

impl Backend {
    /// Fine-tuned first: a model id both processes serve goes to the
    /// fine-tuned pipeline, as it does in a unified process.
    pub const ALL: [Backend; 2] = [Backend::FineTuned, Backend::Rag];

    /// The role of its process.
    pub fn role(self) -> Role {
        match self {
            Backend::Rag => Role::Rag,
            Backend::FineTuned => Role::FineTuned,
        }
    }

    /// Its process's name (the role's).
    pub fn name(self) -> &'static str {
        self.role().name()
    }

    /// The backend that serves a client path when the path alone decides:
    /// the one whose role serves the path's part.
    pub fn of_path(path: &str) -> Option<Self> {
        let part = Capability::of_path(path)?;
        Self::ALL.into_iter().find(|b| b.role().may_serve(part))
    }
}

/// The client routes where the request body's `model` picks the part
/// (OpenAI's, Anthropic's, Ollama's, the tokenizer's); a body without one
/// goes to the RAG side. The gateway and the nginx front door route these.
pub const MODEL_ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/tokenize",
    "/detokenize",
    "/apply-template",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
];

/// The model id of the RAG pipeline in the OpenAI API.
pub const RAG_MODEL: &str = "hearth-rag";
/// The model id of the fine-tuned pipeline in the OpenAI API.
pub const FINE_TUNED_MODEL: &str = "hearth-fine-tuned";

impl Capability {
    /// Its routes for clients: exact paths, or prefixes ending in `/`.
    /// The OpenAI and Anthropic routes and `/tokenize` and its kin are not
    /// here: there the body's `model` picks the part.
    pub fn routes(self) -> &'static [&'static str] {
        match self {
            Documents => &[
                "/documents",
                "/documents/",
                "/collections",
                "/collections/",
                "/search",
                "/rerank",
                "/v1/rerank",
            ],
            Embeddings => &["/embed"],
            Rag => &["/rag"],
            FineTuned => &["/fine-tuned", "/adapters", "/adapters/"],
            Generator => &[],
        }
    }

    /// The part a client route belongs to, if any.
    pub fn of_path(path: &str) -> Option<Self> {
        [Documents, Embeddings, Rag, FineTuned, Generator]
            .into_iter()
            .find(|part| {
                part.routes()
                    .iter()
                    .any(|route| match route.strip_suffix('/') {
                        Some(_) => path.starts_with(route),
                        None => path == *route,
                    })
            })
    }

    /// Its name in `/info` and `/topology`.
    pub fn name(self) -> &'static str {
        match self {
            Documents => "documents",
            Embeddings => "embeddings",
            Rag => "rag",
            FineTuned => "fine-tuned",
            Generator => "generator",
        }
    }

    /// What it is, in a sentence's words.
    pub fn describe(self) -> &'static str {
        match self {
            Documents => "the document store",
            Embeddings => "embeddings",
            Rag => "the RAG pipeline",
            FineTuned => "the fine-tuned pipeline",
            Generator => "raw generation",
        }
    }

    /// The processes that serve it, from the table: "the `rag` process (or
    /// a unified `all` one)".
    pub fn served_by(self) -> String {
        let mut roles: Vec<String> = TABLE
            .iter()
            .filter(|(role, _)| *role != Role::All && role.may_serve(self))
            .map(|(role, _)| match (role, self) {
                (Role::Generate, FineTuned) => "`generate --model fine-tuned`".to_string(),
                _ => format!("`{}`", role.name()),
            })
            .collect();
        let first = roles.remove(0);
        let mut others: Vec<String> = roles.into_iter().map(|r| format!("a {r} one")).collect();
        if Role::All.may_serve(self) {
            others.push("a unified `all` one".into());
        }
        if others.is_empty() {
            format!("the {first} process")
        } else {
            format!("the {first} process (or {})", others.join(", or "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_pick_backends() {
        assert_eq!(Backend::of_path("/rag"), Some(Backend::Rag));
        assert_eq!(Backend::of_path("/documents/a%2Fb"), Some(Backend::Rag));
        assert_eq!(Backend::of_path("/fine-tuned"), Some(Backend::FineTuned));
        assert_eq!(Backend::of_path("/v1/chat/completions"), None);
        assert_eq!(Backend::of_path("/nope"), None);
    }

    #[test]
    fn paths_belong_to_parts() {
        assert_eq!(Capability::of_path("/rag"), Some(Rag));
        assert_eq!(Capability::of_path("/documents"), Some(Documents));
        assert_eq!(Capability::of_path("/documents/a%2Fb"), Some(Documents));
        assert_eq!(Capability::of_path("/fine-tuned"), Some(FineTuned));
        assert_eq!(Capability::of_path("/embed"), Some(Embeddings));
        assert_eq!(Capability::of_path("/generate"), None);
        assert_eq!(Capability::of_path("/embedder"), None);
        assert_eq!(Capability::of_path("/v1/chat/completions"), None);
        assert_eq!(Capability::of_path("/ragged"), None);
    }

    #[test]
    fn the_table_names_who_serves_what() {
        assert!(Role::Rag.serves(LlmSlot::RagGenerator).contains(&Documents));
        assert!(!Role::Generate
            .serves(LlmSlot::RagGenerator)
            .contains(&FineTuned));
        assert!(Role::Generate
            .serves(LlmSlot::FineTuned)
            .contains(&FineTuned));
        assert!(Role::Gateway.serves(LlmSlot::FineTuned).is_empty());
        assert_eq!(
            FineTuned.served_by(),
            "the `fine-tuned` process (or a `generate --model fine-tuned` one, or a unified `all` one)"
        );
        assert_eq!(
            Documents.served_by(),
            "the `rag` process (or a unified `all` one)"
        );
        assert_eq!(Generator.served_by(), "the `generate` process");
    }
}
