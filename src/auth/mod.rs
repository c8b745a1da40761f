//! Who is asking, and what they may see. Dialects verify their own signatures
//! (each cloud signs differently) against the keys held here.

mod keys;
mod nonce;
mod tokens;

pub use keys::{AccessKey, KeyStore, KeysError};
pub use nonce::{Nonce, NonceCache};
pub use tokens::{StaticTokens, TokenError, TokenRules};
