/// mimalloc instead of glibc's allocator: a batch holds thousands of runs' small allocations across the
/// runtime's threads, and glibc's per-thread arenas kept ~20 % of a 10,000-run batch's peak as
/// fragmentation (capping them cost a third more CPU); a plan of 100,000 runs spent a fifth of its time in
/// malloc and free (BENCHMARKS.md, issue M). Built without transparent huge pages (`no_thp`): mimalloc's
/// `madvise(MADV_HUGEPAGE)` on its arenas made a single run's peak RSS 46 MiB instead of 21.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(ohrun::cli::main() as u8)
}
