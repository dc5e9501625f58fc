//! Hostile model files: the default models' GGUF and safetensors files,
//! mutated (counts and lengths claiming terabytes, flipped bytes, headers
//! cut short), loaded by the real binary under an address-space limit of
//! 3 GiB. Every one must end in a clear error (or load, when a mutation
//! happens to be harmless): no panic, no crash, and no allocation the file
//! cannot justify (one would fail against the limit and abort the process).

use crate::common::{embedder_path, llm_path};
use candle_core::quantized::gguf_file;
use rand::{Rng, SeedableRng};
use std::process::Command;

/// Run hearth with `args` under the address-space limit; panics with the
/// output unless it exited by itself, without a panic, and (when it
/// failed) with an `error:` line.
fn run_limited(what: &str, args: &[&str]) -> bool {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v 3145728; exec '{}' {}",
            env!("CARGO_BIN_EXE_hearth"),
            quoted.join(" ")
        ))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        code.is_some(),
        "{what}: killed by a signal ({:?}): {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
    assert!(
        !stderr.contains("memory allocation"),
        "{what}: an allocation failed: {stderr}"
    );
    if code != Some(0) {
        assert!(
            stderr.lines().any(|l| l.starts_with("error: ")),
            "{what}: failed without a clear error: {stderr}"
        );
    }
    code == Some(0)
}

/// `bytes` with one mutation of `kind` (from `rng`), confined to
/// `header` bytes at the start.
fn mutate(bytes: &[u8], header: usize, kind: usize, rng: &mut impl Rng) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let huge = [1u64 << 40, 1 << 62, u64::MAX, u32::MAX as u64 + 1];
    let h = huge[rng.random_range(0..huge.len())].to_le_bytes();
    match kind {
        // A count, a length or a dimension claiming terabytes.
        0 => {
            let at = rng.random_range(0..header.saturating_sub(8)) & !7;
            b[at..at + 8].copy_from_slice(&h);
        }
        1 => {
            let at = rng.random_range(0..header.saturating_sub(8));
            b[at..at + 8].copy_from_slice(&h);
        }
        // A few bytes flipped.
        2 => {
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..header);
                b[at] ^= 1 << rng.random_range(0..8);
            }
        }
        // The file cut short inside its header.
        _ => b.truncate(rng.random_range(0..header)),
    }
    b
}

#[test]
fn hostile_gguf_files_give_clear_errors() {
    let model = llm_path();
    let mut file = std::fs::File::open(&model).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let header = content.tensor_data_offset as usize;
    let full = std::fs::read(&model).unwrap();
    // The header and the first tensors' data: enough for every reader,
    // small enough to write many times.
    let prefix = &full[..(header + (256 << 10)).min(full.len())];
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut loaded, mut refused) = (0, 0);
    for i in 0..64 {
        let kind = i % 4;
        // The counts and the first strings sit in the first bytes: aim a
        // quarter of the mutations there.
        let region = if i % 8 < 2 { 64 } else { header };
        let bytes = mutate(prefix, region, kind, &mut rng);
        let path = dir.path().join(format!("m{i}.gguf"));
        std::fs::write(&path, &bytes).unwrap();
        let p = path.to_str().unwrap();
        let what = format!("mutant {i} (kind {kind})");
        if run_limited(&what, &["models", "inspect", p]) {
            loaded += 1;
        } else {
            refused += 1;
        }
        // Loading for real, every other one (tensors are missing from the
        // prefix, so the best a mutant can do is a clear error).
        if i % 2 == 0 {
            assert!(
                !run_limited(
                    &what,
                    &[
                        "generate",
                        "--llm",
                        p,
                        "--prompt",
                        "hi",
                        "--max-tokens",
                        "1"
                    ]
                ),
                "{what}: a truncated model cannot load"
            );
        }
    }
    eprintln!("64 GGUF mutants: {refused} refused with a clear error, {loaded} still readable");
    assert!(refused > 32, "most mutants must be refused");
}

#[test]
fn hostile_safetensors_files_give_clear_errors() {
    let source = embedder_path();
    let weights = std::fs::read(source.join("model.safetensors")).unwrap();
    let header = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let prefix = &weights[..(header + (256 << 10)).min(weights.len())];
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (mut loaded, mut refused) = (0, 0);
    for i in 0..24 {
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(source.join(f), dir.path().join(f)).unwrap();
        }
        let kind = i % 4;
        let region = if i % 8 < 2 { 8 } else { header };
        let bytes = if i == 0 {
            // The header's length alone claiming terabytes.
            let mut b = prefix.to_vec();
            b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            b
        } else {
            mutate(prefix, region.max(9), kind, &mut rng)
        };
        std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
        let d = dir.path().to_str().unwrap();
        if run_limited(
            &format!("safetensors mutant {i} (kind {kind})"),
            &["embed", "--embedder", d, "hi"],
        ) {
            loaded += 1;
        } else {
            refused += 1;
        }
    }
    eprintln!(
        "24 safetensors mutants: {refused} refused with a clear error, {loaded} still readable"
    );
    assert!(refused > 12);
}
