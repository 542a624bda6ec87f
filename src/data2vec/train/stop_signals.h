// SIGINT and SIGTERM as a request to stop a training loop cleanly (finish the step, write a
// checkpoint, return).
//
// Why the signals get a thread of their own: oneDNN 2.x's JIT sgemm kernels (the blocks'
// products, nn/gemm.h) point rsp into a heap workspace while they run, so a signal delivered to
// a thread inside one has its frame written over the heap (oneDNN issue #4845, fixed in 3.11;
// Debian bookworm ships 2.6). Ctrl-C then aborted ~1 run in 8 with "corrupted size vs.
// prev_size". Blocked in every thread and taken by sigwait() in one that runs no kernel, the
// signals never interrupt one.
#pragma once

namespace data2vec::train {

// Blocks SIGINT and SIGTERM in the calling thread, and so in every thread it starts afterwards,
// and starts the thread that receives them. Call it before starting threads (first thing in
// main, or in the command that trains); later calls do nothing. A thread that existed before
// (a library's, started at load time) still takes them with a handler that does the same. Until
// a StopSignals is alive a signal ends the process as it would have (a signal ignored when this
// was called stays ignored).
void route_stop_signals_to_a_thread();

// While one lives, SIGINT and SIGTERM request a stop instead of ending the process; the
// dispositions in force before come back when it goes (on every way out, an exception too).
// Without route_stop_signals_to_a_thread() it installs a plain handler, which any thread may run.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // A stop has been requested since construction.
  bool requested() const;

 private:
  using Handler = void (*)(int);
  bool routed_ = false;
  Handler previous_int_ = nullptr;
  Handler previous_term_ = nullptr;
};

}  // namespace data2vec::train
