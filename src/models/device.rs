//! Choosing the compute device: `cpu`, `cuda[:N]` or `metal[:N]`.
//!
//! CUDA and Metal exist only when hearth is built with the `cuda` or `metal`
//! cargo feature; asking for them otherwise is a clear error, never a panic.

use crate::error::{Error, Result};
use candle_core::{Device, DeviceLocation};

/// Parse a device name and open it.
pub fn open(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    let (kind, ordinal) = match name.split_once(':') {
        Some((kind, n)) => {
            let n = n.parse::<usize>().map_err(|_| {
                Error::Device(format!(
                    "invalid device ordinal in {name:?}: expected e.g. cuda:0"
                ))
            })?;
            (kind.to_string(), n)
        }
        None => (name.clone(), 0),
    };
    match kind.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => gpu(
            "cuda",
            candle_core::utils::cuda_is_available(),
            ordinal,
            || Device::new_cuda(ordinal),
        ),
        "metal" => gpu(
            "metal",
            candle_core::utils::metal_is_available(),
            ordinal,
            || Device::new_metal(ordinal),
        ),
        other => Err(Error::Device(format!(
            "unknown device {other:?}: expected cpu, cuda[:N] or metal[:N]"
        ))),
    }
}

/// Open a GPU whose backend is compiled in only with the cargo feature `kind`.
fn gpu(
    kind: &str,
    built: bool,
    ordinal: usize,
    open: impl FnOnce() -> candle_core::Result<Device>,
) -> Result<Device> {
    if !built {
        return Err(Error::Device(format!(
            "device {kind} requested, but this hearth was built without the `{kind}` feature \
             (rebuild with `cargo build --release --features {kind}`)"
        )));
    }
    open().map_err(|e| Error::Device(format!("cannot open {kind}:{ordinal}: {e}")))
}

/// A short human name for a device, as shown in logs and `/info`.
pub fn describe(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_opens_and_bad_names_are_clear_errors() {
        assert!(open("cpu").unwrap().is_cpu());
        assert!(open(" CPU ").unwrap().is_cpu());
        let err = open("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device"), "{err}");
        let err = open("cuda:x").unwrap_err().to_string();
        assert!(err.contains("ordinal"), "{err}");
        #[cfg(not(feature = "cuda"))]
        {
            let err = open("cuda").unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
