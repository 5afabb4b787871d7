//! Fuzz target: arbitrary event sequences through `MessagesToChatStream` (Anthropic -> OpenAI) and
//! `ChatToMessagesStream` (OpenAI -> Anthropic). Properties (checked in `check_streams`): never a
//! panic, output always well-formed SSE whose data is JSON, exactly one terminal event (`[DONE]`,
//! or `message_stop`/`error`) and nothing after it, dense tool indexes, sequential content blocks.
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run anthropic_stream -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tierflow::providers::anthropic::fuzzing::check_streams(data);
});
