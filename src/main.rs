//! The `tierflow` binary: parse arguments, load the configuration, start the cores.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    std::process::exit(tierflow::cli::main());
}
