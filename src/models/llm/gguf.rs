//! Opening GGUF files: the header parsed by candle's reader, with what a
//! hostile or broken file can do to it turned into clear errors.
//!
//! candle's reader bounds-checks lengths and counts against the file's size
//! (no huge allocation from a lying header), but a tensor type it does not
//! know is a bare "unknown dtype", and some inconsistencies (an alignment
//! of zero) panic inside it. Here the first gets the list of supported
//! types and the second becomes an error. Tensor shapes are checked
//! against the metadata by the model that reads them
//! (`Llama::from_gguf` in `llama.rs`).

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use std::io::{Read, Seek};
use std::path::Path;

/// The tensor types candle reads (and so hearth), as GGUF names them.
pub const TENSOR_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

/// GGUF writers differ in integer widths (llama.cpp stores token types as
/// i32, ids as u32): accept any integer that fits.
pub(crate) fn value_u32(v: &Value) -> Option<u32> {
    let wide: i128 = match v {
        Value::U8(x) => (*x).into(),
        Value::I8(x) => (*x).into(),
        Value::U16(x) => (*x).into(),
        Value::I16(x) => (*x).into(),
        Value::U32(x) => (*x).into(),
        Value::I32(x) => (*x).into(),
        Value::U64(x) => (*x).into(),
        Value::I64(x) => (*x).into(),
        _ => return None,
    };
    u32::try_from(wide).ok()
}

/// Parse the header of the GGUF in `reader` (`what` names it in errors).
pub fn read_content<R: Read + Seek>(reader: &mut R, what: &str) -> Result<Content> {
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(reader)));
    match parsed {
        Ok(Ok(content)) => Ok(content),
        Ok(Err(e)) => {
            let e = e.to_string();
            let hint = if e.contains("unknown dtype") {
                format!(" (hearth reads the tensor types {TENSOR_TYPES}; the IQ and TQ types are not supported)")
            } else {
                String::new()
            };
            Err(Error::Model(format!(
                "{what} is not a readable GGUF file: {e}{hint}"
            )))
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::Model(format!(
                "{what} is not a readable GGUF file: its header is inconsistent ({msg})"
            )))
        }
    }
}

/// Open and parse the GGUF file at `path`; the file is returned to read
/// tensors from.
pub fn open(path: &Path) -> Result<(std::fs::File, Content)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let content = read_content(&mut file, &path.display().to_string())?;
    Ok((file, content))
}
