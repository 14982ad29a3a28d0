//! Reading PyTorch checkpoints: the zip format `torch.save` writes since
//! PyTorch 1.6 (through Candle's pickle support), and the legacy format
//! before it — a stream of pickles followed by the raw storages — which
//! some published checkpoints (EfficientNet-Lite0's) still use.
//!
//! Only floating-point tensors are returned (a state dict's integer
//! bookkeeping, such as `num_batches_tracked`, is skipped), as F32 on the
//! CPU.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

fn bad(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Import {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The legacy format's first pickle: protocol 2, the magic number
/// 0x1950a86a20f9469cfc6c as a 10-byte LONG1, STOP.
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

/// Whether `path` is a legacy (pre-zip) `torch.save` file.
pub fn is_legacy(path: &Path) -> Result<bool> {
    let mut head = [0u8; 15];
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io("import", path, e))?;
    match file.read_exact(&mut head) {
        Ok(()) => Ok(head == LEGACY_MAGIC),
        Err(_) => Ok(false),
    }
}

/// Every floating-point tensor of the checkpoint at `path`, by name, as
/// F32 on the CPU.
pub fn read_checkpoint(path: &Path) -> Result<HashMap<String, Tensor>> {
    if is_legacy(path)? {
        return read_legacy(path);
    }
    let tensors = candle_core::pickle::read_all(path).map_err(|e| {
        bad(
            path,
            format!("not a PyTorch checkpoint Quiver can read: {e}"),
        )
    })?;
    tensors
        .into_iter()
        .filter(|(_, t)| t.dtype().is_float())
        .map(|(name, t)| {
            let t = t
                .to_dtype(DType::F32)
                .map_err(|e| bad(path, format!("{name}: {e}")))?;
            Ok((name, t))
        })
        .collect()
}

/// One tensor of the main pickle: which storage, where in it, what shape.
struct TensorRef {
    name: String,
    storage: String,
    /// Bytes per element of the storage.
    elem: usize,
    /// The element type, for floating-point storages (the ones returned).
    dtype: Option<DType>,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn read_pickle<R: BufRead>(reader: &mut R, path: &Path, what: &str) -> Result<Object> {
    let mut stack = Stack::empty();
    stack
        .read_loop(reader)
        .and_then(|()| stack.finalize())
        .map_err(|e| bad(path, format!("reading the {what}: {e}")))
}

fn usize_list(obj: Object) -> Option<Vec<usize>> {
    match obj {
        Object::Tuple(items) | Object::List(items) => items
            .into_iter()
            .map(|i| match i {
                Object::Int(v) => usize::try_from(v).ok(),
                Object::Long(v) => usize::try_from(v).ok(),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn int(obj: &Object) -> Option<usize> {
    match obj {
        Object::Int(v) => usize::try_from(*v).ok(),
        Object::Long(v) => usize::try_from(*v).ok(),
        _ => None,
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, …)` with the
/// storage a persistent id `('storage', FloatStorage, key, location, n, …)`.
fn tensor_ref(name: String, value: Object) -> Option<TensorRef> {
    let Object::Reduce { callable, args } = value else {
        return None;
    };
    let (callable, args) = match (*callable, *args) {
        (
            Object::Class {
                module_name,
                class_name,
            },
            Object::Tuple(mut outer),
        ) if module_name == "torch._utils" && class_name == "_rebuild_parameter" => {
            // A Parameter wraps the tensor.
            match outer.drain(..).next()? {
                Object::Reduce { callable, args } => (*callable, *args),
                _ => return None,
            }
        }
        (c, a) => (c, a),
    };
    match &callable {
        Object::Class {
            module_name,
            class_name,
        } if module_name == "torch._utils" && class_name == "_rebuild_tensor_v2" => {}
        _ => return None,
    }
    let Object::Tuple(args) = args else {
        return None;
    };
    let mut args = args.into_iter();
    let storage = args.next()?;
    let offset = int(&args.next()?)?;
    let shape = usize_list(args.next()?)?;
    let stride = usize_list(args.next()?)?;
    let Object::PersistentLoad(id) = storage else {
        return None;
    };
    let Object::Tuple(id) = *id else {
        return None;
    };
    let mut id = id.into_iter();
    match id.next()? {
        Object::Unicode(s) if s == "storage" => {}
        _ => return None,
    }
    let (elem, dtype) = match id.next()? {
        Object::Class { class_name, .. } => match class_name.as_str() {
            "FloatStorage" => (4, Some(DType::F32)),
            "DoubleStorage" => (8, Some(DType::F64)),
            "HalfStorage" => (2, Some(DType::F16)),
            "BFloat16Storage" => (2, Some(DType::BF16)),
            "LongStorage" => (8, None),
            "IntStorage" => (4, None),
            "ShortStorage" => (2, None),
            "CharStorage" | "ByteStorage" | "BoolStorage" => (1, None),
            _ => return None,
        },
        _ => return None,
    };
    let storage = match id.next()? {
        Object::Unicode(key) => key,
        _ => return None,
    };
    Some(TensorRef {
        name,
        storage,
        elem,
        dtype,
        offset,
        shape,
        stride,
    })
}

/// The bytes of a tensor laid out with `stride` (in elements) from
/// `offset` in `data`, in row-major order; `None` if any element lies
/// outside `data`. (Checkpoints converted from TensorFlow hold transposed
/// views.)
fn gather(
    data: &[u8],
    elem: usize,
    offset: usize,
    shape: &[usize],
    stride: &[usize],
) -> Option<Vec<u8>> {
    let len: usize = shape.iter().product();
    if stride == contiguous_strides(shape).as_slice() {
        let start = offset.checked_mul(elem)?;
        return data
            .get(start..start.checked_add(len.checked_mul(elem)?)?)
            .map(<[u8]>::to_vec);
    }
    // A view never holds more than its storage (broadcast views aside,
    // which state dicts do not save): refuse rather than allocate.
    let bytes = len.checked_mul(elem).filter(|&b| b <= data.len())?;
    let mut out = Vec::with_capacity(bytes);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..len {
        let at = index
            .iter()
            .zip(stride)
            .try_fold(offset, |acc, (i, s)| acc.checked_add(i.checked_mul(*s)?))?;
        let start = at.checked_mul(elem)?;
        out.extend_from_slice(data.get(start..start.checked_add(elem)?)?);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Some(out)
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// The legacy format: magic, protocol version and system-info pickles, the
/// object (a state dict) whose tensors name storages by key, the list of
/// storage keys, then each storage as a little-endian i64 element count
/// followed by its bytes.
fn read_legacy(path: &Path) -> Result<HashMap<String, Tensor>> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io("import", path, e))?;
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 15];
    reader
        .read_exact(&mut magic)
        .map_err(|e| ModelError::io("import", path, e))?;
    read_pickle(&mut reader, path, "protocol version")?;
    read_pickle(&mut reader, path, "system information")?;
    let object = read_pickle(&mut reader, path, "state dict")?;
    let entries = match object {
        Object::Dict(entries) => entries,
        Object::Build { callable, .. } => match *callable {
            Object::Dict(entries) => entries,
            _ => return Err(bad(path, "the checkpoint does not hold a state dict")),
        },
        _ => return Err(bad(path, "the checkpoint does not hold a state dict")),
    };
    let refs: Vec<TensorRef> = entries
        .into_iter()
        .filter_map(|(k, v)| match k {
            Object::Unicode(name) => tensor_ref(name, v),
            _ => None,
        })
        .collect();
    let keys = match read_pickle(&mut reader, path, "storage keys")? {
        Object::List(keys) | Object::Tuple(keys) => keys,
        _ => return Err(bad(path, "the storage key list is not a list")),
    };
    let kinds: HashMap<&str, (usize, Option<DType>)> = refs
        .iter()
        .map(|r| (r.storage.as_str(), (r.elem, r.dtype)))
        .collect();
    let file_len = std::fs::metadata(path)
        .map_err(|e| ModelError::io("import", path, e))?
        .len();
    let mut storages: HashMap<String, (DType, Vec<u8>)> = HashMap::new();
    for key in keys {
        let Object::Unicode(key) = key else {
            return Err(bad(path, "a storage key is not a string"));
        };
        let mut count = [0u8; 8];
        reader
            .read_exact(&mut count)
            .map_err(|e| bad(path, format!("storage {key}: {e}")))?;
        let count = u64::from_le_bytes(count);
        // Integer storages (a state dict's counters) are read past.
        let (elem, dtype) = kinds
            .get(key.as_str())
            .copied()
            .ok_or_else(|| bad(path, format!("storage {key} is not used by any tensor")))?;
        let elem = elem as u64;
        let bytes = count
            .checked_mul(elem)
            .filter(|&n| n <= file_len)
            .ok_or_else(|| {
                bad(
                    path,
                    format!("storage {key}: {count} elements is past the end of the file"),
                )
            })?;
        let mut data = vec![0u8; bytes as usize];
        reader
            .read_exact(&mut data)
            .map_err(|e| bad(path, format!("storage {key}: truncated ({e})")))?;
        if let Some(dtype) = dtype {
            storages.insert(key, (dtype, data));
        }
    }
    let mut out = HashMap::new();
    for r in refs.into_iter().filter(|r| r.dtype.is_some()) {
        let (dtype, data) = storages.get(&r.storage).ok_or_else(|| {
            bad(
                path,
                format!("{}: storage {} is missing", r.name, r.storage),
            )
        })?;
        let elem = dtype.size_in_bytes();
        if r.shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .is_none()
        {
            return Err(bad(
                path,
                format!("{}: shape {:?} is too large", r.name, r.shape),
            ));
        }
        let bytes = gather(data, elem, r.offset, &r.shape, &r.stride).ok_or_else(|| {
            bad(
                path,
                format!("{}: extends past its storage {}", r.name, r.storage),
            )
        })?;
        let tensor = Tensor::from_raw_buffer(&bytes, *dtype, &r.shape, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| bad(path, format!("{}: {e}", r.name)))?;
        out.insert(r.name, tensor);
    }
    if out.is_empty() {
        return Err(bad(path, "no floating-point tensors in the checkpoint"));
    }
    Ok(out)
}
