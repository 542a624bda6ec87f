// `data2vec pretrain --nproc N`: N local worker processes of this same program, with the
// environment torchrun would give them, so one machine needs no Python launcher.
#pragma once

#include <string>
#include <vector>

namespace data2vec::train {

// A TCP port on 127.0.0.1 that was free a moment ago (for MASTER_PORT).
int free_local_port();

// Runs `args` (argv[1..], this program's) as `nproc` workers with RANK, LOCAL_RANK, WORLD_SIZE,
// MASTER_ADDR=127.0.0.1 and MASTER_PORT set; waits for all. When one fails, the others are
// stopped (SIGTERM, then SIGKILL after `grace_seconds`). SIGINT/SIGTERM to the launcher are
// passed on. Returns 0, or the first failing worker's exit code (128 + signal when killed).
int launch_local_workers(int nproc, const std::vector<std::string>& args, int grace_seconds = 30);

}  // namespace data2vec::train
