//! LoRA adapters: low-rank updates `W + s * B A` of a base model's
//! matrices, read from a GGUF adapter (what llama.cpp's
//! `convert_lora_to_gguf.py` writes) or a Hugging Face PEFT directory
//! (`adapter_config.json` + `adapter_model.safetensors`), and checked
//! against the base they are for: every target a matrix the base has, every
//! shape the base's, the rank above zero.
//!
//! An adapter is applied two ways (by `llama.rs`):
//! unmerged, where each sequence may carry one and its rows get
//! `s * B (A x)` added after the base's product (one copy of the base
//! serves the bare model and any number of adapters, in one batch), or
//! merged into a copy of the weights at load ([`Pair::delta`]).
//!
//! The arithmetic is llama.cpp's (`build_lora_mm`): `A x` and `B (A x)` as
//! f32 products in tinyBLAS's lane order ([`dot_f32`]; exact for ranks
//! that are a multiple of 16), scaled by `scale * alpha / rank`, added to
//! the base's product. Adapter tensors in F16 or BF16 are widened to f32
//! at load (llama.cpp would round the activations to their type too).

use super::architecture::LlamaConfig;
use crate::error::{Error, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use hearth_kernels::wide::{add_scaled_product_t, dot_f32};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The matrices of a layer an adapter may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The base tensor's name in a GGUF llama layout (`blk.N.{name}.weight`).
    pub fn gguf(self) -> &'static str {
        match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        }
    }

    /// The module's name in a Hugging Face llama
    /// (`model.layers.N.{name}`).
    pub fn hf(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// The heads whose rotary pairs order this matrix's output rows (q's
    /// and k's): the rows `convert_hf_to_gguf.py` permutes for llama files.
    pub fn rotary_heads(self, cfg: &LlamaConfig) -> Option<usize> {
        match self {
            Target::Q => Some(cfg.n_head),
            Target::K => Some(cfg.n_kv_head),
            _ => None,
        }
    }

    /// (output width, input width) of the base matrix.
    fn dims(self, cfg: &LlamaConfig) -> (usize, usize) {
        let (d, q, kv) = (cfg.n_embd, cfg.q_dim(), cfg.n_kv_head * cfg.head_dim);
        match self {
            Target::Q => (q, d),
            Target::K | Target::V => (kv, d),
            Target::O => (d, q),
            Target::Gate | Target::Up => (cfg.n_ff, d),
            Target::Down => (d, cfg.n_ff),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Adapter names are model ids: 1-64 letters, digits, `-`, `_` or `.`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "adapter name {name:?}: use 1-64 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn supported_targets() -> String {
    Target::ALL
        .iter()
        .map(|t| format!("{} ({})", t.gguf(), t.hf()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One matrix's update: `scale * B A`, `A` `[rank, k]` row-major f32, `B`
/// `[n, rank]` held transposed (`bt`, `[rank, n]`) for
/// [`add_scaled_product_t`].
pub struct Pair {
    a: Vec<f32>,
    bt: Vec<f32>,
    /// `A` and `B` as tensors on the model's device, made on the tensor
    /// path's first use (a model's device never changes).
    tensors: std::sync::OnceLock<(Tensor, Tensor)>,
    rank: usize,
    k: usize,
    n: usize,
    scale: f32,
}

impl Pair {
    /// `out += scale * B (A x)` for each row of `x` (`k` values) and of
    /// `out` (`n` values), as llama.cpp adds it: the product, then the
    /// scaling, then the sum.
    pub fn add_rows(&self, x: &[f32], out: &mut [f32]) {
        let mut t = vec![0f32; self.rank];
        for (x, out) in x.chunks_exact(self.k).zip(out.chunks_exact_mut(self.n)) {
            for (i, t) in t.iter_mut().enumerate() {
                *t = dot_f32(&self.a[i * self.k..(i + 1) * self.k], x);
            }
            add_scaled_product_t(&self.bt, &t, self.scale, out);
        }
    }

    /// `B` row-major, `[n, rank]`.
    fn b(&self) -> Vec<f32> {
        (0..self.n * self.rank)
            .map(|x| self.bt[(x % self.rank) * self.n + x / self.rank])
            .collect()
    }

    /// `scale * B A` as an `[n, k]` row-major matrix: what merging adds to
    /// the base's weights.
    pub fn delta(&self) -> Vec<f32> {
        let b = self.b();
        let mut out = vec![0f32; self.n * self.k];
        for (j, row) in out.chunks_exact_mut(self.k).enumerate() {
            for i in 0..self.rank {
                let w = b[j * self.rank + i] * self.scale;
                for (o, a) in row.iter_mut().zip(&self.a[i * self.k..(i + 1) * self.k]) {
                    *o += w * a;
                }
            }
        }
        out
    }

    /// `A` and `B` as tensors `[rank, k]` and `[n, rank]` on `device`, for
    /// the tensor forward pass.
    pub fn tensors(&self, device: &Device) -> Result<&(Tensor, Tensor)> {
        if let Some(t) = self.tensors.get() {
            return Ok(t);
        }
        let made = (
            Tensor::from_slice(&self.a, (self.rank, self.k), device)?,
            Tensor::from_vec(self.b(), (self.n, self.rank), device)?,
        );
        Ok(self.tensors.get_or_init(|| made))
    }

    pub fn scale(&self) -> f32 {
        self.scale
    }
}

/// Where an adapter came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// llama.cpp's GGUF adapter.
    Gguf,
    /// Hugging Face PEFT's directory.
    Peft,
}

/// A LoRA adapter checked against its base. Immutable; share with `Arc`.
pub struct Adapter {
    pub name: String,
    pub path: PathBuf,
    pub format: Format,
    /// The rank (the largest, if targets differ).
    pub rank: usize,
    pub alpha: f32,
    /// The user's scale (1 = as trained).
    pub scale: f32,
    /// Per layer, per [`Target`].
    layers: Vec<[Option<Pair>; 7]>,
}

/// What `/info` and `/v1/models` say about an adapter.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AdapterInfo {
    pub name: String,
    pub path: String,
    #[schema(value_type = String)]
    pub format: Format,
    pub rank: usize,
    pub alpha: f32,
    pub scale: f32,
    /// The base matrices it changes, e.g. `attn_q` (in every layer listed).
    pub targets: Vec<String>,
    /// Parameters it adds.
    pub parameters: usize,
}

impl Adapter {
    /// Read the adapter at `path` (a GGUF file, or a PEFT directory or its
    /// `adapter_config.json`) for a base of shape `base`, scaled by `scale`.
    pub fn load(path: &Path, name: &str, scale: f32, base: &LlamaConfig) -> Result<Self> {
        if !scale.is_finite() {
            return Err(Error::InvalidInput(format!(
                "adapter {name}: scale must be a finite number, not {scale}"
            )));
        }
        if base.family.fused {
            return Err(Error::InvalidInput(format!(
                "adapter {name}: LoRA on {} models (fused q/k/v and gate/up matrices) is not supported yet; \
                 adapters run on llama, qwen2, qwen3 and gemma3 bases",
                base.family.arch
            )));
        }
        let is_gguf = path.extension().is_some_and(|e| e == "gguf");
        let mut raw = if is_gguf {
            read_gguf(path, base)?
        } else {
            read_peft(path, base)?
        };
        raw.name = name.to_string();
        raw.scale = scale;
        raw.build(base)
    }

    /// The update of `target` in layer `layer`, if the adapter has one.
    pub fn pair(&self, layer: usize, target: Target) -> Option<&Pair> {
        self.layers.get(layer)?[target.index()].as_ref()
    }

    pub fn info(&self) -> AdapterInfo {
        let mut targets = BTreeMap::new();
        let mut parameters = 0;
        for layer in &self.layers {
            for (t, p) in Target::ALL.iter().zip(layer) {
                if let Some(p) = p {
                    targets.insert(t.gguf().to_string(), ());
                    parameters += p.a.len() + p.bt.len();
                }
            }
        }
        AdapterInfo {
            name: self.name.clone(),
            path: self.path.display().to_string(),
            format: self.format,
            rank: self.rank,
            alpha: self.alpha,
            scale: self.scale,
            targets: targets.into_keys().collect(),
            parameters,
        }
    }
}

/// An adapter's matrices as read, before the shapes are checked.
struct Raw {
    name: String,
    path: PathBuf,
    format: Format,
    alpha: f32,
    scale: f32,
    /// PEFT's rsLoRA: `alpha / sqrt(rank)` instead of `alpha / rank`.
    rs: bool,
    /// (layer, target) -> (A, B), each with its dims as read.
    pairs: BTreeMap<(usize, Target), (Matrix, Matrix)>,
}

struct Matrix {
    rows: usize,
    cols: usize,
    values: Vec<f32>,
}

/// A and B matrices as a file lists them, paired up by layer and target.
#[derive(Default)]
struct Halves(BTreeMap<(usize, Target), (Option<Matrix>, Option<Matrix>)>);

impl Halves {
    fn put(&mut self, key: (usize, Target), is_a: bool, m: Matrix) {
        let slot = self.0.entry(key).or_default();
        if is_a {
            slot.0 = Some(m);
        } else {
            slot.1 = Some(m);
        }
    }

    /// The pairs; `missing` words the error for a half without the other.
    fn pairs(
        self,
        missing: impl Fn(usize, Target) -> Error,
    ) -> Result<BTreeMap<(usize, Target), (Matrix, Matrix)>> {
        let mut pairs = BTreeMap::new();
        for ((layer, target), halves) in self.0 {
            let (Some(a), Some(b)) = halves else {
                return Err(missing(layer, target));
            };
            pairs.insert((layer, target), (a, b));
        }
        Ok(pairs)
    }
}

impl Raw {
    fn build(self, base: &LlamaConfig) -> Result<Adapter> {
        let name = &self.name;
        if self.pairs.is_empty() {
            return Err(Error::InvalidInput(format!(
                "adapter {name} ({}) holds no LoRA matrices",
                self.path.display()
            )));
        }
        let mut layers: Vec<[Option<Pair>; 7]> =
            (0..base.n_layer).map(|_| Default::default()).collect();
        let mut max_rank = 0;
        for ((layer, target), (a, b)) in self.pairs {
            let what = format!("adapter {name}: blk.{layer}.{}", target.gguf());
            if layer >= base.n_layer {
                return Err(Error::InvalidInput(format!(
                    "{what}: the base has {} layers (an adapter for another base?)",
                    base.n_layer
                )));
            }
            let (n, k) = target.dims(base);
            let rank = a.rows;
            if rank == 0 {
                return Err(Error::InvalidInput(format!("{what}: rank 0")));
            }
            if a.cols != k || b.rows != n || b.cols != rank {
                return Err(Error::InvalidInput(format!(
                    "{what}: A is [{}, {}] and B [{}, {}] where the base's matrix is [{n}, {k}] \
                     (A must be [rank, {k}], B [{n}, rank]): an adapter for another base?",
                    a.rows, a.cols, b.rows, b.cols
                )));
            }
            max_rank = max_rank.max(rank);
            // llama.cpp: `alpha ? scale * alpha / rank : scale`.
            let scale = if self.alpha == 0.0 {
                self.scale
            } else if self.rs {
                self.scale * self.alpha / (rank as f32).sqrt()
            } else {
                self.scale * self.alpha / rank as f32
            };
            // B transposed: row i is column i.
            let bt = (0..rank * n)
                .map(|x| b.values[(x % n) * rank + x / n])
                .collect();
            layers[layer][target.index()] = Some(Pair {
                a: a.values,
                bt,
                tensors: Default::default(),
                rank,
                k,
                n,
                scale,
            });
        }
        Ok(Adapter {
            name: self.name,
            path: self.path,
            format: self.format,
            rank: max_rank,
            alpha: self.alpha,
            scale: self.scale,
            layers,
        })
    }
}

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("adapter {}: {why}", path.display()))
}

/// `blk.N.TARGET.weight` -> (N, target).
fn gguf_target(name: &str) -> Option<(usize, Target)> {
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let target = rest.strip_suffix(".weight")?;
    let target = Target::ALL.into_iter().find(|t| t.gguf() == target)?;
    Some((layer.parse().ok()?, target))
}

fn read_gguf(path: &Path, base: &LlamaConfig) -> Result<Raw> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| bad(path, format!("not a readable GGUF file: {e}")))?;
    let text = |key: &str| {
        content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
    };
    if text("general.type").as_deref() != Some("adapter")
        || text("adapter.type").as_deref() != Some("lora")
    {
        return Err(bad(
            path,
            "not a LoRA adapter (general.type must be \"adapter\" and adapter.type \"lora\")",
        ));
    }
    let arch = text("general.architecture").unwrap_or_default();
    if arch != base.family.arch {
        return Err(bad(
            path,
            format!(
                "made for a {arch} model, and the base is {}",
                base.family.arch
            ),
        ));
    }
    let alpha = match content.metadata.get("adapter.lora.alpha") {
        Some(v) => v
            .to_f32()
            .or_else(|_| v.to_f64().map(|x| x as f32))
            .map_err(|_| bad(path, "adapter.lora.alpha is not a number"))?,
        None => 0.0,
    };
    let mut halves = Halves::default();
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    for tensor in names {
        let (base_name, is_a) = if let Some(n) = tensor.strip_suffix(".lora_a") {
            (n, true)
        } else if let Some(n) = tensor.strip_suffix(".lora_b") {
            (n, false)
        } else {
            return Err(bad(path, format!("tensor {tensor} is not a LoRA matrix")));
        };
        let key = gguf_target(base_name).ok_or_else(|| {
            bad(
                path,
                format!(
                    "tensor {tensor}: hearth applies adapters to {}",
                    supported_targets()
                ),
            )
        })?;
        let info = &content.tensor_infos[&tensor];
        let dims = info.shape.dims().to_vec();
        let [rows, cols] = dims[..] else {
            return Err(bad(
                path,
                format!("tensor {tensor} is not a matrix: {dims:?}"),
            ));
        };
        if rows.saturating_mul(cols) > MAX_VALUES {
            return Err(bad(
                path,
                format!("tensor {tensor} is implausibly large: {dims:?}"),
            ));
        }
        let values = content
            .tensor(&mut file, &tensor, &Device::Cpu)
            .and_then(|t| t.dequantize(&Device::Cpu))
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| bad(path, format!("tensor {tensor}: {e}")))?;
        halves.put(key, is_a, Matrix { rows, cols, values });
    }
    let pairs = halves.pairs(|layer, target| {
        bad(
            path,
            format!("blk.{layer}.{} lacks its lora_a or lora_b", target.gguf()),
        )
    })?;
    Ok(Raw {
        name: String::new(),
        path: path.to_path_buf(),
        format: Format::Gguf,
        alpha,
        scale: 1.0,
        rs: false,
        pairs,
    })
}

/// No adapter matrix holds more values than this (a 70B model's largest
/// matrix at rank 256 is far below it); larger dims are a corrupt file.
const MAX_VALUES: usize = 1 << 31;

#[derive(serde::Deserialize)]
struct PeftConfig {
    peft_type: Option<String>,
    r: usize,
    lora_alpha: f32,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    rank_pattern: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    alpha_pattern: BTreeMap<String, serde_json::Value>,
}

/// `base_model.model.model.layers.N.MODULE.lora_{A,B}[.default].weight`
/// -> (N, target, is A).
fn peft_target(name: &str) -> Option<(usize, Target, bool)> {
    let rest = name.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let rest = rest.replace(".default.", ".");
    let (module, is_a) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
        (m, true)
    } else {
        (rest.strip_suffix(".lora_B.weight")?, false)
    };
    let target = Target::ALL.into_iter().find(|t| t.hf() == module)?;
    Some((layer.parse().ok()?, target, is_a))
}

fn read_peft(path: &Path, base: &LlamaConfig) -> Result<Raw> {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let config_path = dir.join("adapter_config.json");
    let weights_path = dir.join("adapter_model.safetensors");
    for p in [&config_path, &weights_path] {
        if !p.is_file() {
            return Err(bad(
                path,
                format!(
                    "{} is missing (an adapter is a .gguf file or a PEFT directory with \
                     adapter_config.json and adapter_model.safetensors)",
                    p.display()
                ),
            ));
        }
    }
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config: PeftConfig = serde_json::from_str(&text)
        .map_err(|e| bad(&config_path, format!("not a PEFT LoRA config: {e}")))?;
    if config.peft_type.as_deref().is_some_and(|t| t != "LORA") {
        return Err(bad(
            &config_path,
            format!(
                "peft_type {:?}: hearth runs LoRA adapters",
                config.peft_type
            ),
        ));
    }
    if config.r == 0 {
        return Err(bad(&config_path, "rank (r) 0"));
    }
    if config.fan_in_fan_out {
        return Err(bad(
            &config_path,
            "fan_in_fan_out adapters (GPT-2's Conv1D layers) are not llama adapters",
        ));
    }
    if !config.rank_pattern.is_empty() || !config.alpha_pattern.is_empty() {
        return Err(bad(
            &config_path,
            "per-module rank_pattern/alpha_pattern are not supported yet",
        ));
    }
    let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(|e| {
        bad(
            &weights_path,
            format!("not a readable safetensors file: {e}"),
        )
    })?;
    let mut halves = Halves::default();
    for (name, tensor) in tensors {
        let (layer, target, is_a) = peft_target(&name).ok_or_else(|| {
            bad(
                &weights_path,
                format!(
                    "tensor {name}: hearth applies adapters to {}",
                    supported_targets()
                ),
            )
        })?;
        let [rows, cols] = tensor.dims()[..] else {
            return Err(bad(
                &weights_path,
                format!("tensor {name} is not a matrix: {:?}", tensor.dims()),
            ));
        };
        let mut values = tensor
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| bad(&weights_path, format!("tensor {name}: {e}")))?;
        // GGUF llama files order each head's rotary pairs interleaved,
        // Hugging Face's as two halves: the converter permutes q's and k's
        // output rows, so B's rows move the same way here.
        // (A B of another shape is left as it is: the shape check reports it.)
        if !is_a && !base.family.rope_neox && rows == target.dims(base).0 {
            if let Some(heads) = target.rotary_heads(base) {
                values = super::hf::permute_rows(&values, rows, cols, heads)
                    .map_err(|why| bad(&weights_path, format!("tensor {name}: {why}")))?;
            }
        }
        halves.put((layer, target), is_a, Matrix { rows, cols, values });
    }
    let pairs = halves.pairs(|layer, target| {
        bad(
            &weights_path,
            format!("layer {layer} {} lacks its lora_A or lora_B", target.hf()),
        )
    })?;
    for ((layer, target), (a, _)) in &pairs {
        if a.rows != config.r {
            return Err(bad(
                &weights_path,
                format!(
                    "layer {layer} {}: rank {} where adapter_config.json says r = {}",
                    target.hf(),
                    a.rows,
                    config.r
                ),
            ));
        }
    }
    Ok(Raw {
        name: String::new(),
        path: path.to_path_buf(),
        format: Format::Peft,
        alpha: config.lora_alpha,
        scale: 1.0,
        rs: config.use_rslora,
        pairs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_targets() {
        assert_eq!(gguf_target("blk.3.attn_q.weight"), Some((3, Target::Q)));
        assert_eq!(
            gguf_target("blk.0.ffn_down.weight"),
            Some((0, Target::Down))
        );
        assert_eq!(gguf_target("token_embd.weight"), None);
        assert_eq!(
            peft_target("base_model.model.model.layers.12.mlp.up_proj.lora_B.weight"),
            Some((12, Target::Up, false))
        );
        assert_eq!(
            peft_target("base_model.model.model.layers.0.self_attn.k_proj.lora_A.default.weight"),
            Some((0, Target::K, true))
        );
        assert_eq!(peft_target("base_model.model.lm_head.lora_A.weight"), None);
    }

    #[test]
    fn unmerged_rows_add_the_merged_delta() {
        let (rank, k, n) = (2, 16, 3);
        let pair = Pair {
            a: (0..rank * k).map(|i| (i as f32 * 0.1).sin()).collect(),
            bt: (0..n * rank).map(|i| (i as f32 * 0.7).cos()).collect(),
            tensors: Default::default(),
            rank,
            k,
            n,
            scale: 0.5,
        };
        let x: Vec<f32> = (0..k).map(|i| i as f32 / k as f32).collect();
        let mut out = vec![1f32; n];
        pair.add_rows(&x, &mut out);
        let delta = pair.delta();
        for j in 0..n {
            let want: f32 = 1.0
                + delta[j * k..(j + 1) * k]
                    .iter()
                    .zip(&x)
                    .map(|(d, x)| d * x)
                    .sum::<f32>();
            assert!((out[j] - want).abs() < 1e-5, "{} vs {want}", out[j]);
        }
    }
}
