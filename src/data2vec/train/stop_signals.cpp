#include "data2vec/train/stop_signals.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <csignal>
#include <mutex>
#include <thread>

namespace data2vec::train {

namespace {

// Lock-free atomics: safe to set from the fallback signal handler too.
std::atomic<int> g_stop_requested{0};
std::atomic<int> g_armed{0};  // StopSignals alive (routed signals request a stop)
std::atomic<bool> g_routed{false};
struct sigaction g_previous_int {};   // the dispositions when the signals were routed
struct sigaction g_previous_term {};

extern "C" void request_stop(int) {
  g_stop_requested.store(1, std::memory_order_relaxed);
}

const struct sigaction& previous_disposition(int signal_number) {
  return signal_number == SIGINT ? g_previous_int : g_previous_term;
}

// A routed SIGINT / SIGTERM: a stop request while a loop runs; otherwise what it did before it
// was routed. Returns true when that is settled here (a stop, or a signal that was ignored);
// false when the caller must raise it again, its previous disposition now restored.
// Async-signal-safe.
bool settle_stop_signal(int signal_number) {
  if (g_armed.load() > 0) {
    g_stop_requested.store(1);
    return true;
  }
  const struct sigaction& previous = previous_disposition(signal_number);
  if (previous.sa_handler == SIG_IGN) return true;
  sigaction(signal_number, &previous, nullptr);
  return false;
}

// Routed, in a thread that does not block the signals because it existed before routing (a
// library's thread started at load time: LibTorch 2.x has one).
extern "C" void routed_fallback(int signal_number) {
  if (settle_stop_signal(signal_number)) return;
  raise(signal_number);  // pending until this handler returns, then as before routing
}

sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// The one thread that receives SIGINT and SIGTERM. It runs no kernel, so the signal frame lands
// on its own stack.
void receive_stop_signals() {
  const sigset_t set = stop_set();
  while (true) {
    int signal_number = 0;
    if (sigwait(&set, &signal_number) != 0 || settle_stop_signal(signal_number)) continue;
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signal_number);
    pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
    raise(signal_number);  // the default action ends the process here, with the signal's status
    pthread_sigmask(SIG_BLOCK, &one, nullptr);  // a handler of the caller's ran: keep receiving
  }
}

}  // namespace

void route_stop_signals_to_a_thread() {
  static std::once_flag once;
  std::call_once(once, [] {
    const sigset_t set = stop_set();
    struct sigaction fallback {};
    fallback.sa_handler = routed_fallback;
    fallback.sa_mask = set;
    fallback.sa_flags = SA_RESTART;
    sigaction(SIGINT, &fallback, &g_previous_int);
    sigaction(SIGTERM, &fallback, &g_previous_term);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread(receive_stop_signals).detach();
    g_routed.store(true);
  });
}

StopSignals::StopSignals() : routed_(g_routed.load()) {
  g_stop_requested.store(0);
  if (routed_) {
    g_armed.fetch_add(1);
    return;
  }
  previous_int_ = std::signal(SIGINT, request_stop);
  previous_term_ = std::signal(SIGTERM, request_stop);
}

StopSignals::~StopSignals() {
  if (routed_) {
    g_armed.fetch_sub(1);
    return;
  }
  std::signal(SIGINT, previous_int_);
  std::signal(SIGTERM, previous_term_);
}

bool StopSignals::requested() const {
  return g_stop_requested.load() != 0;
}

}  // namespace data2vec::train
