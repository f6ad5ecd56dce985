//! [`Slab`]: the read-only storage of a matrix's arrays, owned or borrowed from a memory-mapped
//! file (a saved packed model, `crate::packed`), so that a mapped model is used in place.

// Without LibTorch there are no saved packs to map: only owned slabs are made.
#![cfg_attr(not(feature = "torch"), allow(dead_code))]

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

use half::f16;

use super::BLOCK;

/// Plain old data: every bit pattern is a valid value, there is no padding, and the alignment
/// is that of the element type. Only for the element types of the block matrices.
///
/// # Safety
/// Implement only for types that satisfy the above.
pub unsafe trait Plain: Copy + 'static {}
// SAFETY: integers, floats, arrays of bytes, and `repr(C)` structs of byte arrays (alignment 1:
// no padding).
unsafe impl Plain for f16 {}
unsafe impl Plain for f32 {}
unsafe impl Plain for [u8; BLOCK / 2] {}
unsafe impl Plain for [i8; BLOCK] {}
unsafe impl Plain for super::format::Q5Codes {}
unsafe impl Plain for super::format::Q6Codes {}

/// Why mapped bytes cannot be viewed as a slab.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SlabError {
    /// The byte range is outside the map.
    #[error("bytes {start}..{end} are outside a file of {len} bytes")]
    Range {
        /// First byte.
        start: usize,
        /// One past the last byte.
        end: usize,
        /// Bytes in the map.
        len: usize,
    },
    /// The range is not a whole number of elements or not aligned for them.
    #[error("bytes {start}..{end} are not a whole, aligned array of {size}-byte elements")]
    Layout {
        /// First byte.
        start: usize,
        /// One past the last byte.
        end: usize,
        /// Element size.
        size: usize,
    },
}

/// An immutable array of `T`: a `Vec`, or a range of a read-only memory map kept alive by the
/// slab itself.
pub(crate) enum Slab<T: Plain> {
    Owned(Vec<T>),
    Mapped {
        /// Keeps the mapping alive as long as `ptr` is used.
        _map: Arc<memmap2::Mmap>,
        ptr: *const T,
        len: usize,
    },
}

// SAFETY: a mapped slab only reads a private, read-only mapping that it keeps alive; nothing
// writes through `ptr`, so sharing and sending it is as safe as for `&[T]` (and `T: Plain` is
// `Send + Sync`: integers, floats and byte arrays).
unsafe impl<T: Plain> Send for Slab<T> {}
unsafe impl<T: Plain> Sync for Slab<T> {}

impl<T: Plain> Slab<T> {
    /// The bytes `range` of `map` as an array of `T`, without copying: the range must lie in
    /// the map, hold a whole number of `T` and start aligned for `T`.
    pub(crate) fn mapped(map: &Arc<memmap2::Mmap>, range: Range<usize>) -> Result<Self, SlabError> {
        let (start, end) = (range.start, range.end);
        if start > end || end > map.len() {
            return Err(SlabError::Range {
                start,
                end,
                len: map.len(),
            });
        }
        let size = size_of::<T>();
        // SAFETY: `start <= map.len()`, so the pointer stays inside (or one past) the map.
        let ptr = unsafe { map.as_ptr().add(start) };
        if !(end - start).is_multiple_of(size) || !ptr.cast::<T>().is_aligned() {
            return Err(SlabError::Layout { start, end, size });
        }
        Ok(Self::Mapped {
            _map: Arc::clone(map),
            ptr: ptr.cast(),
            len: (end - start) / size,
        })
    }

    /// The elements as bytes, for writing them to a file.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        let s: &[T] = self;
        // SAFETY: `T: Plain` has no padding, so its memory is initialised bytes.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), size_of_val(s)) }
    }

    /// Whether the slab borrows a memory map.
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self, Self::Mapped { .. })
    }
}

impl<T: Plain> Deref for Slab<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Self::Owned(v) => v,
            // SAFETY: checked at construction to be `len` aligned elements inside the map,
            // which `_map` keeps mapped; `T: Plain` makes any bytes a valid `T`.
            Self::Mapped { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }
}

impl<T: Plain> From<Vec<T>> for Slab<T> {
    fn from(v: Vec<T>) -> Self {
        Self::Owned(v)
    }
}

impl<T: Plain> Clone for Slab<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Owned(v) => Self::Owned(v.clone()),
            Self::Mapped { _map, ptr, len } => Self::Mapped {
                _map: Arc::clone(_map),
                ptr: *ptr,
                len: *len,
            },
        }
    }
}

impl<T: Plain + PartialEq> PartialEq for Slab<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Plain> fmt::Debug for Slab<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "Slab({} x {} bytes, {how})", self.len(), size_of::<T>())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn map_of(bytes: &[u8]) -> Arc<memmap2::Mmap> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        // SAFETY: a private temporary file nobody else writes.
        Arc::new(unsafe { memmap2::Mmap::map(&file) }.unwrap())
    }

    #[test]
    fn a_mapped_slab_reads_the_file_in_place_and_checks_its_range() {
        let values: Vec<f16> = (0..8).map(|i| f16::from_f32(i as f32)).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let map = map_of(&bytes);
        let all = Slab::<f16>::mapped(&map, 0..16).unwrap();
        assert!(all.is_mapped());
        assert_eq!(&*all, values.as_slice());
        assert_eq!(all.as_bytes(), bytes.as_slice());
        assert_eq!(all, Slab::from(values.clone()));
        let tail = Slab::<f16>::mapped(&map, 4..16).unwrap();
        assert_eq!(&*tail, &values[2..]);
        assert_eq!(tail.clone(), tail);
        assert_eq!(
            Slab::<f16>::mapped(&map, 8..18).unwrap_err(),
            SlabError::Range {
                start: 8,
                end: 18,
                len: 16
            }
        );
        // Odd length, then odd start.
        assert!(matches!(
            Slab::<f16>::mapped(&map, 0..3),
            Err(SlabError::Layout { .. })
        ));
        assert!(matches!(
            Slab::<f16>::mapped(&map, 1..5),
            Err(SlabError::Layout { .. })
        ));
        // The map outlives the handle it was made from.
        drop(map);
        assert_eq!(tail[0], values[2]);
    }
}
