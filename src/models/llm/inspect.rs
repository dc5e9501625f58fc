//! What a GGUF file holds, as `hearth models inspect` prints it and `/info`
//! reports it for a loaded model: its name, size, tensor types, shapes, and
//! whether hearth runs it (and on its fast CPU path).

use super::architecture::LlamaConfig;
use super::gguf::{open, value_u32};
use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::Content;
use std::path::Path;

/// What a GGUF file holds, as `hearth models inspect` prints it and `/info`
/// reports it for a loaded model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, when the file has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub file_bytes: u64,
    pub parameters: u64,
    /// Tensor type -> (tensors, parameters): the quantization mix.
    pub tensor_types: std::collections::BTreeMap<String, (usize, u64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<u64>,
    /// RoPE: base, scaling type and factor, whether the file carries
    /// frequency factors.
    pub rope: serde_json::Value,
    /// `tokenizer.ggml.model`, `.pre`, vocabulary size, `add_bos`.
    pub tokenizer: serde_json::Value,
    /// The first lines of `tokenizer.chat_template`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    /// Whether hearth loads this architecture and shape...
    pub supported: bool,
    /// ...and if not, why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
    /// Whether every matrix runs on hearth's own CPU kernels (Q4_0, Q4_1,
    /// Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16); the others go through
    /// candle's slower products.
    pub fast_cpu_path: bool,
}

impl Summary {
    pub fn of(content: &Content, file_bytes: u64) -> Self {
        use candle_core::quantized::gguf_file::Value;
        let meta = |key: &str| content.metadata.get(key);
        let text = |key: &str| meta(key).and_then(|v| v.to_string().ok()).cloned();
        let int = |key: &str| meta(key).and_then(value_u32).map(u64::from);
        let float = |key: &str| meta(key).and_then(|v| v.to_f32().ok());
        let arch = text("general.architecture").unwrap_or_default();
        let at = |key: &str| format!("{arch}.{key}");
        let mut tensor_types = std::collections::BTreeMap::new();
        let mut parameters = 0u64;
        let mut fast = true;
        for (name, info) in &content.tensor_infos {
            // Saturating: a lying header must not overflow the count.
            let n = info
                .shape
                .dims()
                .iter()
                .fold(1u64, |a, &d| a.saturating_mul(d as u64));
            parameters = parameters.saturating_add(n);
            let entry = tensor_types
                .entry(format!("{:?}", info.ggml_dtype))
                .or_insert((0usize, 0u64));
            entry.0 += 1;
            entry.1 += n;
            let matrix = info.shape.dims().len() == 2 && name != "token_embd.weight";
            if matrix && !hearth_kernels::quant::QMatrix::supports(info.ggml_dtype) {
                fast = false;
            }
        }
        let vocab = match meta("tokenizer.ggml.tokens") {
            Some(Value::Array(t)) => Some(t.len()),
            _ => None,
        };
        let unsupported = LlamaConfig::from_gguf(content).err().map(|e| e.to_string());
        Self {
            name: text("general.name"),
            file_bytes,
            parameters,
            tensor_types,
            context_length: int(&at("context_length")),
            layers: int(&at("block_count")),
            embedding_length: int(&at("embedding_length")),
            heads: int(&at("attention.head_count")),
            kv_heads: int(&at("attention.head_count_kv")),
            rope: serde_json::json!({
                "base": float(&at("rope.freq_base")),
                "scaling": text(&at("rope.scaling.type")),
                "scaling_factor": float(&at("rope.scaling.factor")),
                "frequency_factors": content.tensor_infos.contains_key("rope_freqs.weight"),
            }),
            tokenizer: serde_json::json!({
                "model": text("tokenizer.ggml.model"),
                "pre": text("tokenizer.ggml.pre"),
                "vocabulary": vocab,
                "add_bos": meta("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()),
            }),
            chat_template: text("tokenizer.chat_template")
                .map(|t| t.lines().take(3).collect::<Vec<_>>().join("\n")),
            fast_cpu_path: fast && unsupported.is_none(),
            supported: unsupported.is_none(),
            unsupported,
            architecture: arch,
        }
    }

    /// The summary as text, one fact per line.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let opt = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
        let _ = writeln!(out, "architecture    {}", self.architecture);
        if let Some(name) = &self.name {
            let _ = writeln!(out, "name            {name}");
        }
        let _ = writeln!(
            out,
            "parameters      {:.1} M in {:.1} MB",
            self.parameters as f64 / 1e6,
            self.file_bytes as f64 / 1e6
        );
        let mix: Vec<String> = self
            .tensor_types
            .iter()
            .map(|(t, (n, p))| {
                format!(
                    "{t} {n} tensors ({:.0}%)",
                    100.0 * *p as f64 / self.parameters.max(1) as f64
                )
            })
            .collect();
        let _ = writeln!(out, "tensor types    {}", mix.join(", "));
        let _ = writeln!(
            out,
            "shape           {} layers, width {}, {} heads ({} key/value)",
            opt(self.layers),
            opt(self.embedding_length),
            opt(self.heads),
            opt(self.kv_heads)
        );
        let _ = writeln!(out, "context length  {}", opt(self.context_length));
        let _ = writeln!(out, "rope            {}", self.rope);
        let _ = writeln!(out, "tokenizer       {}", self.tokenizer);
        if let Some(t) = &self.chat_template {
            let _ = writeln!(
                out,
                "chat template   {}",
                t.replace('\n', "\n                ")
            );
        }
        let _ = writeln!(
            out,
            "supported       {}",
            match &self.unsupported {
                None => "yes".to_string(),
                Some(e) => format!("no: {e}"),
            }
        );
        let _ = writeln!(
            out,
            "fast CPU path   {}",
            if self.fast_cpu_path {
                "yes (hearth's kernels for every matrix)"
            } else {
                "no (candle's quantized products for some matrices)"
            }
        );
        out
    }
}

/// The summary of the GGUF file at `path`.
pub fn inspect(path: &Path) -> Result<Summary> {
    let (file, content) = open(path)?;
    let bytes = file.metadata().map_err(|e| Error::io(path, e))?.len();
    Ok(Summary::of(&content, bytes))
}
