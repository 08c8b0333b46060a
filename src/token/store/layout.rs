//! The identity of tokenwarden's stored bytes, shared by the file layout (`format`) and the
//! records' associated data (`binding`): the magic that begins both, and the file format
//! versions. A leaf: `format` and `binding` import it, and it imports nothing, so neither
//! of them needs the other (nor `record`) for these.

/// First bytes of every store file, and of every record's associated data.
pub(crate) const MAGIC: [u8; 8] = *b"TKWARDEN";
/// The format version this build writes (and reads).
pub(crate) const FORMAT_VERSION: u16 = 2;
/// The earlier format version this build still reads: records bound to their connection only.
pub(crate) const LEGACY_FORMAT_VERSION: u16 = 1;
