//! Who is asking, and what they may see. Dialects verify their own signatures
//! (each cloud signs differently) against the keys held here.

mod keys;
mod nonce;

pub use keys::{AccessKey, KeyStore, KeysError};
pub use nonce::{Nonce, NonceCache};
