#include "data2vec/train/launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace data2vec::train {

namespace {

// The workers, for the signal handler (async-signal-safe: a fixed array and kill()).
constexpr int kMaxWorkers = 256;
volatile pid_t g_workers[kMaxWorkers] = {};
volatile int g_num_workers = 0;

extern "C" void forward_signal(int sig) {
  for (int i = 0; i < g_num_workers; ++i) {
    if (g_workers[i] > 0) kill(g_workers[i], sig);
  }
}

}  // namespace

int free_local_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket(): ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const std::string why = std::strerror(errno);
    close(fd);
    throw std::runtime_error("could not find a free port: " + why);
  }
  close(fd);
  return ntohs(address.sin_port);
}

int launch_local_workers(int nproc, const std::vector<std::string>& args, int grace_seconds) {
  if (nproc < 1 || nproc > kMaxWorkers) {
    throw std::invalid_argument("--nproc " + std::to_string(nproc) + ": expected 1 to " +
                                std::to_string(kMaxWorkers));
  }
  const std::string port = std::to_string(free_local_port());
  std::vector<pid_t> pids(size_t(nproc), 0);
  for (int rank = 0; rank < nproc; ++rank) {
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error(std::string("fork(): ") + std::strerror(errno));
    if (pid == 0) {
      setenv("RANK", std::to_string(rank).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", port.c_str(), 1);
      std::vector<char*> argv;
      static const char self[] = "/proc/self/exe";
      argv.push_back(const_cast<char*>(self));
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(self, argv.data());
      std::fprintf(stderr, "rank %d: execv failed: %s\n", rank, std::strerror(errno));
      _exit(127);
    }
    pids[size_t(rank)] = pid;
    g_workers[rank] = pid;
    g_num_workers = rank + 1;
  }
  auto previous_int = std::signal(SIGINT, forward_signal);
  auto previous_term = std::signal(SIGTERM, forward_signal);

  int first_failure = 0, running = nproc;
  auto rank_of = [&](pid_t pid) {
    for (int r = 0; r < nproc; ++r)
      if (pids[size_t(r)] == pid) return r;
    return -1;
  };
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, first_failure ? WNOHANG : 0);
    if (pid < 0 && errno == EINTR) continue;
    if (pid < 0) break;
    if (pid == 0) {  // stopping the others after a failure: poll until the grace runs out
      if (std::chrono::steady_clock::now() > deadline) {
        for (int r = 0; r < nproc; ++r)
          if (g_workers[r] > 0) kill(g_workers[r], SIGKILL);
        deadline = std::chrono::steady_clock::time_point::max();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    const int rank = rank_of(pid);
    if (rank < 0) continue;
    g_workers[rank] = 0;
    --running;
    int code = 0;
    if (WIFEXITED(status)) code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) code = 128 + WTERMSIG(status);
    if (code != 0 && first_failure == 0) {
      first_failure = code;
      spdlog::error("rank {} {} {}; stopping the other workers", rank,
                    WIFSIGNALED(status) ? "was killed by signal" : "exited with code",
                    WIFSIGNALED(status) ? WTERMSIG(status) : code);
      for (int r = 0; r < nproc; ++r)
        if (g_workers[r] > 0) kill(g_workers[r], SIGTERM);
      deadline = std::chrono::steady_clock::now() + std::chrono::seconds(grace_seconds);
    }
  }
  std::signal(SIGINT, previous_int);
  std::signal(SIGTERM, previous_term);
  g_num_workers = 0;
  return first_failure;
}

}  // namespace data2vec::train
