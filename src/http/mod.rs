//! Wire format only, no gateway policy: the downstream request head and body framing, the upstream
//! response head and body framing, SSE event splitting, and the pooled upstream connections.
//! What to do with a request is `pipeline`'s business.

pub mod chunked;
pub mod client;
pub mod head;
pub mod pool;
pub mod response;
pub mod sse;
