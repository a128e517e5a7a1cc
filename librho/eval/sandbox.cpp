#include "librho/eval/sandbox.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "librho/util/error.h"
#include "librho/util/files.h"

namespace rho {
namespace {
namespace fs = std::filesystem;

// Landlock's user-space interface (linux/landlock.h, written out here because distribution headers lag the
// kernels they run on; the values are the kernel's stable ABI).
struct LandlockRulesetAttr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;  // ABI >= 4
  uint64_t scoped;              // ABI >= 6
};
struct __attribute__((packed)) LandlockPathBeneath {
  uint64_t allowed_access;
  int32_t parent_fd;
};
constexpr uint64_t kFsExecute = 1ULL << 0, kFsWriteFile = 1ULL << 1, kFsReadFile = 1ULL << 2,
                   kFsReadDir = 1ULL << 3, kFsRefer = 1ULL << 13, kFsTruncate = 1ULL << 14, kFsIoctlDev = 1ULL << 15;
constexpr uint64_t kNetBindTcp = 1ULL << 0, kNetConnectTcp = 1ULL << 1;
constexpr uint64_t kScopeAbstractUnix = 1ULL << 0, kScopeSignal = 1ULL << 1;
constexpr int kRulePathBeneath = 1;
constexpr long kSysCreateRuleset = 444, kSysAddRule = 445, kSysRestrictSelf = 446;

int landlock_abi() {
  const long v = syscall(kSysCreateRuleset, nullptr, 0, 1U /* LANDLOCK_CREATE_RULESET_VERSION */);
  return v < 0 ? 0 : static_cast<int>(v);
}

uint64_t fs_rights(int abi) {
  uint64_t r = (1ULL << 13) - 1;  // ABI 1: execute .. make_sym
  if (abi >= 2) r |= kFsRefer;
  if (abi >= 3) r |= kFsTruncate;
  if (abi >= 5) r |= kFsIoctlDev;
  return r;
}

// The interpreter's absolute path, from PATH when the name has no '/'.
std::string find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return fs::absolute(name).string();
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t from = 0;
  while (from <= dirs.size()) {
    const size_t colon = std::min(dirs.find(':', from), dirs.size());
    const fs::path candidate = fs::path(dirs.substr(from, colon - from)) / name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate.string();
    from = colon + 1;
  }
  throw Error(fmt::format("sandbox: no {} on PATH", name));
}

// What the interpreter is and where it reads its standard library and packages, asked once, unconfined:
// its real executable (a pyenv or similar shim is a script that needs more than the sandbox allows) and its
// prefixes and site-packages.
struct Interpreter {
  std::string executable;
  std::vector<std::string> dirs;
};

Interpreter ask_interpreter(const std::string& python) {
  if (python.find('\'') != std::string::npos) throw Error(fmt::format("sandbox: an interpreter path with a quote: {}", python));
  const std::string cmd = fmt::format(
      "'{}' -c 'import sys, site\nprint(sys.executable)\nfor p in {{sys.prefix, sys.base_prefix, sys.exec_prefix, "
      "sys.base_exec_prefix, *site.getsitepackages()}}: print(p)' 2>/dev/null",
      python);
  Interpreter in;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw Error(fmt::format("sandbox: cannot run {}", python));
  char line[4096];
  while (std::fgets(line, sizeof line, p)) {
    std::string d(line);
    while (!d.empty() && (d.back() == '\n' || d.back() == '\r')) d.pop_back();
    if (d.empty()) continue;
    if (in.executable.empty()) in.executable = d;
    else in.dirs.push_back(d);
  }
  pclose(p);
  if (in.executable.empty() || access(in.executable.c_str(), X_OK) != 0)
    throw Error(fmt::format("sandbox: {} does not run as a Python interpreter", python));
  return in;
}

// A compiled seccomp filter, made in the parent (libseccomp allocates) and loaded by the child with one prctl.
struct SeccompFilter {
  std::vector<sock_filter> code;
};

SeccompFilter build_seccomp() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) throw Error("sandbox: seccomp_init failed");
  auto deny = [&](const char* name, int err, unsigned n = 0, scmp_arg_cmp cmp = {}) {
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return;  // not a system call on this architecture
    const int rc = n ? seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), nr, 1, cmp) : seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), nr, 0);
    if (rc < 0) {
      seccomp_release(ctx);
      throw Error(fmt::format("sandbox: seccomp rule for {} failed ({})", name, std::strerror(-rc)));
    }
  };
  // No new processes; threads (clone with CLONE_THREAD) stay allowed. clone3's flags live in memory that
  // seccomp cannot read: ENOSYS makes the C library fall back to clone.
  deny("fork", EPERM);
  deny("vfork", EPERM);
  deny("clone", EPERM, 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
  deny("clone3", ENOSYS);
  // No sockets at all: Landlock does not guard connecting to a Unix socket path (a session bus, a container
  // daemon) on the kernels this runs on. socketpair stays.
  deny("socket", EPERM);
  // Signals and scheduling only for its own process group (it leads one: pid 0 means itself).
  deny("kill", EPERM, 1, SCMP_A0(SCMP_CMP_NE, 0));
  for (const char* name : {"prlimit64", "sched_setaffinity", "sched_setscheduler", "sched_setparam"})
    deny(name, EPERM, 1, SCMP_A0(SCMP_CMP_NE, 0));
  for (const char* name : {"setpriority", "ioprio_set"}) deny(name, EPERM, 1, SCMP_A1(SCMP_CMP_NE, 0));
  for (const char* name : {// other processes and the kernel
                           "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "ptrace", "process_vm_readv",
                           "process_vm_writev", "mount", "umount2", "unshare", "setns", "keyctl", "add_key",
                           "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "pidfd_open",
                           "pidfd_getfd", "pidfd_send_signal", "personality", "chroot", "pivot_root",
                           // memory outside RLIMIT_AS
                           "memfd_create",
                           // file metadata by path, which Landlock does not guard (and truncate below ABI 3)
                           "truncate", "chmod", "fchmodat", "fchmodat2", "chown", "lchown", "fchownat", "setxattr",
                           "lsetxattr", "removexattr", "lremovexattr", "utime", "utimes", "utimensat", "futimesat"})
    deny(name, EPERM);
  int fd = memfd_create("rho-seccomp", MFD_CLOEXEC);
  if (fd < 0 || seccomp_export_bpf(ctx, fd) < 0) {
    seccomp_release(ctx);
    if (fd >= 0) close(fd);
    throw Error("sandbox: cannot export the seccomp filter");
  }
  seccomp_release(ctx);
  const off_t size = lseek(fd, 0, SEEK_END);
  SeccompFilter f;
  f.code.resize(static_cast<size_t>(size) / sizeof(sock_filter));
  if (pread(fd, f.code.data(), static_cast<size_t>(size), 0) != size) {
    close(fd);
    throw Error("sandbox: cannot read the seccomp filter back");
  }
  close(fd);
  return f;
}

// The filter is the same for every program: built once (libseccomp's set-up is not safe to run from several
// threads at once, and run_programs runs programs from several).
const SeccompFilter& seccomp_filter() {
  static const SeccompFilter filter = build_seccomp();
  return filter;
}

// A Landlock ruleset fd: read and execute where the interpreter needs, everything inside `workdir`.
int build_landlock(int abi, const Interpreter& python, const std::string& workdir) {
  LandlockRulesetAttr attr{fs_rights(abi), abi >= 4 ? kNetBindTcp | kNetConnectTcp : 0,
                           abi >= 6 ? kScopeAbstractUnix | kScopeSignal : 0};
  const size_t size = abi >= 6 ? sizeof(attr) : abi >= 4 ? 2 * sizeof(uint64_t) : sizeof(uint64_t);
  const int ruleset = static_cast<int>(syscall(kSysCreateRuleset, &attr, size, 0U));
  if (ruleset < 0) throw Error(fmt::format("sandbox: landlock_create_ruleset: {}", std::strerror(errno)));
  auto allow = [&](const std::string& path, uint64_t rights) {
    const int fd = open(path.c_str(), O_PATH | O_CLOEXEC);
    if (fd < 0) return;  // not on this system
    struct stat st {};
    if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode)) rights &= kFsExecute | kFsReadFile | kFsWriteFile | (abi >= 3 ? kFsTruncate : 0);
    LandlockPathBeneath rule{rights & fs_rights(abi), fd};
    const long rc = syscall(kSysAddRule, ruleset, kRulePathBeneath, &rule, 0U);
    const int err = errno;
    close(fd);
    if (rc < 0) throw Error(fmt::format("sandbox: landlock rule for {}: {}", path, std::strerror(err)));
  };
  try {
    const uint64_t read = kFsExecute | kFsReadFile | kFsReadDir;
    for (const char* p : {"/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/localtime",
                          "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/dev/urandom", "/dev/random", "/dev/zero",
                          "/sys/devices/system/cpu", "/proc/cpuinfo", "/proc/meminfo"})
      allow(p, read);
    for (const auto& d : python.dirs) allow(d, read);
    allow(fs::path(python.executable).parent_path().string(), read);
    allow(fs::canonical(python.executable).parent_path().string(), read);
    allow("/dev/null", kFsReadFile | kFsWriteFile);
    allow(workdir, fs_rights(abi));
  } catch (...) {
    close(ruleset);
    throw;
  }
  return ruleset;
}

void make_removable(const fs::path& dir) {
  std::error_code ec;
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::add, ec);
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->is_directory(ec) && !it->is_symlink(ec)) fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
  }
}

// Bytes of the regular files under dir (what a program wrote in its folder).
int64_t folder_bytes(const fs::path& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code e2;
    if (it->is_regular_file(e2) && !it->is_symlink(e2)) total += static_cast<int64_t>(it->file_size(e2));
  }
  return total;
}

std::string last_line(const std::string& text) {
  size_t end = text.find_last_not_of(" \t\r\n");
  if (end == std::string::npos) return "";
  const size_t begin = text.rfind('\n', end);
  return text.substr(begin == std::string::npos ? 0 : begin + 1, end - (begin == std::string::npos ? 0 : begin + 1) + 1);
}

// The interpreter `name` names, asked once per process.
Interpreter interpreter_for(const std::string& name) {
  static std::mutex mutex;
  static std::map<std::string, Interpreter> known;
  std::lock_guard<std::mutex> lock(mutex);
  auto at = known.find(name);
  if (at == known.end()) at = known.emplace(name, ask_interpreter(find_program(name))).first;
  return at->second;
}

// A fresh folder under $TMPDIR (else /tmp) for one program, removed with what the program left there.
class ScratchFolder {
 public:
  ScratchFolder() {
    const fs::path base = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
    std::string templ = (base / "rho-sandbox-XXXXXX").string();
    if (!mkdtemp(templ.data())) throw Error(fmt::format("sandbox: cannot create a directory under {}", base.string()));
    dir_ = templ;
  }
  ~ScratchFolder() {
    make_removable(dir_);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;
  const fs::path& path() const { return dir_; }

 private:
  fs::path dir_;
};

// A descriptor closed however the run ends.
struct OwnedFd {
  int fd = -1;
  OwnedFd() = default;
  explicit OwnedFd(int f) : fd(f) {}
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  ~OwnedFd() { reset(); }
  void reset() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
};

// A pipe: the parent reads `read`, the child writes `write` (both close on exec).
struct Pipe {
  OwnedFd read, write;
  Pipe() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) throw Error(fmt::format("sandbox: pipe: {}", std::strerror(errno)));
    read.fd = fds[0];
    write.fd = fds[1];
  }
};

// Everything the child needs, made before fork: after it, a threaded parent's child may only make
// async-signal-safe calls. Pointers into its own members: built in place, never copied.
struct ChildSetup {
  ChildSetup(const Interpreter& python, const fs::path& dir, const SandboxOptions& o)
      : workdir(dir.string()), filter(seccomp_filter()), ruleset(build_landlock(landlock_abi(), python, workdir)) {
    env_text = {"PATH=/usr/bin:/bin", "HOME=" + workdir, "TMPDIR=" + workdir, "LANG=C.UTF-8",
                "PYTHONDONTWRITEBYTECODE=1", "PYTHONIOENCODING=utf-8", "OMP_NUM_THREADS=1",
                "OPENBLAS_NUM_THREADS=1", "MKL_NUM_THREADS=1", "MPLBACKEND=Agg"};
    for (auto& e : env_text) env.push_back(e.data());
    env.push_back(nullptr);
    argv_text = {python.executable, "-B", "main.py"};
    for (auto& a : argv_text) argv.push_back(a.data());
    argv.push_back(nullptr);
    prog = {static_cast<unsigned short>(filter.code.size()), const_cast<sock_filter*>(filter.code.data())};
    const rlim_t cpu = static_cast<rlim_t>(std::max(1.0, o.cpu_seconds));
    limits = {{RLIMIT_CPU, {cpu, cpu + 1}},
              {RLIMIT_AS, {static_cast<rlim_t>(o.memory_bytes), static_cast<rlim_t>(o.memory_bytes)}},
              {RLIMIT_FSIZE, {static_cast<rlim_t>(o.file_bytes), static_cast<rlim_t>(o.file_bytes)}},
              {RLIMIT_CORE, {0, 0}},
              {RLIMIT_NOFILE, {256, 256}}};
  }
  ChildSetup(const ChildSetup&) = delete;
  ChildSetup& operator=(const ChildSetup&) = delete;

  std::string workdir;
  std::vector<std::string> env_text, argv_text;
  std::vector<char*> env, argv;
  SeccompFilter filter;
  sock_fprog prog{};
  std::vector<std::pair<int, rlimit>> limits;
  OwnedFd ruleset;  // the Landlock ruleset
};

// The child, after fork: its own session, /dev/null in, the pipes out, the limits, no new privileges, Landlock,
// no inherited descriptors, seccomp, then the interpreter. A step that fails says which on stderr (write is
// async-signal-safe) and exits with 126.
[[noreturn]] void run_child(const ChildSetup& s, int out_fd, int err_fd) {
  auto fail = [](const char* what) {
    const char prefix[] = "sandbox set-up failed: ";
    (void)!write(2, prefix, sizeof prefix - 1);
    (void)!write(2, what, std::strlen(what));
    (void)!write(2, "\n", 1);
    _exit(126);
  };
  setsid();
  const int devnull = open("/dev/null", O_RDONLY);
  if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(126);
  if (chdir(s.workdir.c_str()) != 0) fail("chdir");
  for (const auto& [resource, limit] : s.limits)
    if (setrlimit(resource, &limit) != 0) fail("setrlimit");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("no_new_privs");
  if (syscall(kSysRestrictSelf, s.ruleset.fd, 0U) != 0) fail("landlock_restrict_self");
  // Nothing the parent holds open reaches the program (Landlock does not check descriptors already open).
  if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
    for (int fd = 3; fd < 4096; ++fd) close(fd);
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &s.prog) != 0) fail("seccomp");
  execve(s.argv[0], s.argv.data(), s.env.data());
  fail("execve");
  _exit(126);  // (fail does not return)
}

// The child's process group, killed, and the child reaped, however the run ends.
struct Child {
  pid_t pid;
  bool reaped = false;
  int status = 0;
  int lost = 0;  // wait4's errno when the exit status could not be read
  rusage usage{};
  void reap() {
    while (wait4(pid, &status, 0, &usage) < 0) {
      if (errno == EINTR) continue;
      lost = errno;
      break;
    }
    reaped = true;
  }
  void kill_and_reap() {
    if (reaped) return;
    if (kill(-pid, SIGKILL) != 0) kill(pid, SIGKILL);  // no group yet: the child has not reached setsid
    reap();
  }
  ~Child() { kill_and_reap(); }
  double cpu_seconds() const {
    return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
  }
};

// What stopped the watch before the program ended on its own.
struct Watch {
  std::chrono::time_point<std::chrono::steady_clock, std::chrono::duration<double>> deadline;
  fs::path dir;
  const SandboxOptions& o;
  bool over_output = false, over_wall = false, over_folder = false;
  bool stopped() const { return over_output || over_wall || over_folder; }
  // The wall clock and the folder's size; true when either is over its limit.
  bool over_time_or_folder() {
    if (std::chrono::steady_clock::now() >= deadline) over_wall = true;
    else if (folder_bytes(dir) > o.folder_bytes) over_folder = true;
    return stopped();
  }
};

// The program's stdout and stderr until both pipes close (or a limit is reached), checking the clock and the
// folder at least every 250 ms; output past o.output_bytes in all is dropped and stops the program.
void read_output(OwnedFd& out, OwnedFd& err, SandboxResult& r, Watch& w) {
  pollfd fds[2] = {{out.fd, POLLIN, 0}, {err.fd, POLLIN, 0}};
  OwnedFd* owners[2] = {&out, &err};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_pipes = 2;
  char buf[65536];
  while (open_pipes > 0 && !w.over_time_or_folder()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(w.deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      w.over_wall = true;
      break;
    }
    if (poll(fds, 2, static_cast<int>(std::min<int64_t>(left.count(), 250))) < 0 && errno != EINTR) break;
    for (int k = 0; k < 2; ++k) {
      if (fds[k].fd < 0 || !(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = read(fds[k].fd, buf, sizeof buf);
      if (n <= 0) {
        owners[k]->reset();
        fds[k].fd = -1;
        --open_pipes;
        continue;
      }
      const size_t cap = static_cast<size_t>(w.o.output_bytes);
      const size_t room = cap - std::min(r.out.size() + r.err.size(), cap);
      sinks[k]->append(buf, std::min(room, static_cast<size_t>(n)));
      if (static_cast<size_t>(n) > room) w.over_output = true;
    }
    if (w.over_output) break;
  }
  out.reset();  // the program writing on gets SIGPIPE
  err.reset();
}

// Then the program's exit, under the same clock and folder limit (a program may close its output and sleep).
void wait_for_exit(Child& child, Watch& w) {
  while (!w.stopped()) {
    const pid_t done = wait4(child.pid, &child.status, WNOHANG, &child.usage);
    if (done == child.pid) {
      child.reaped = true;
      return;
    }
    if (done < 0 && errno != EINTR) {
      child.lost = errno;
      child.reaped = true;
      return;
    }
    if (!w.over_time_or_folder()) usleep(10000);
  }
}

// The verdict: a limit the watch reached, else how the program ended (exit status, or the signal and why).
void judge(SandboxResult& r, const Watch& w, const Child& child) {
  using S = SandboxResult::Status;
  const auto& o = w.o;
  const int status = child.status;
  if (w.over_output) {
    r.status = S::OutputLimit;
    r.message = fmt::format("Output Error: more than {} bytes of output", o.output_bytes);
  } else if (w.over_wall) {
    r.status = S::WallLimit;
    r.message = fmt::format("Timeout Error: over {} s", o.wall_seconds);
  } else if (w.over_folder) {
    r.status = S::FolderLimit;
    r.message = fmt::format("File Error: more than {} bytes written", o.folder_bytes);
  } else if (child.lost) {
    r.status = S::Killed;
    r.message = fmt::format("sandbox: the program's exit status was lost ({})", std::strerror(child.lost));
  } else if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    r.exit_code = 128 + sig;
    // RLIMIT_CPU sends SIGXCPU, then SIGKILL at the hard limit.
    if (sig == SIGXCPU || (sig == SIGKILL && child.cpu_seconds() >= o.cpu_seconds)) {
      r.status = S::CpuLimit;
      r.message = fmt::format("Timeout Error: over {} s of CPU time", o.cpu_seconds);
    } else {
      r.status = S::Killed;
      r.message = fmt::format("killed by signal {} ({})", sig, strsignal(sig));
    }
  } else if (WEXITSTATUS(status) != 0) {
    r.status = S::Error;
    r.exit_code = WEXITSTATUS(status);
    r.message = last_line(r.err);
    if (r.message.empty()) r.message = fmt::format("exit code {}", r.exit_code);
    r.missing_module = r.message.rfind("ModuleNotFoundError", 0) == 0;
  }
}
}  // namespace

const char* status_name(SandboxResult::Status s) {
  switch (s) {
    case SandboxResult::Status::Ok: return "ok";
    case SandboxResult::Status::Error: return "error";
    case SandboxResult::Status::CpuLimit: return "cpu_limit";
    case SandboxResult::Status::WallLimit: return "wall_limit";
    case SandboxResult::Status::OutputLimit: return "output_limit";
    case SandboxResult::Status::FolderLimit: return "folder_limit";
    case SandboxResult::Status::Killed: return "killed";
    case SandboxResult::Status::Unavailable: return "unavailable";
  }
  return "?";
}

std::string sandbox_unavailable_reason() {
  if (landlock_abi() < 1)
    return "the sandbox for model-written code needs Landlock (Linux 5.13 or newer with landlock among the "
           "kernel's LSMs); this kernel does not offer it";
  return "";
}

SandboxResult run_python(const std::string& code, const SandboxOptions& o) {
  SandboxResult r;
  const auto t0 = std::chrono::steady_clock::now();
  if (const auto why = sandbox_unavailable_reason(); !why.empty()) {
    r.status = SandboxResult::Status::Unavailable;
    r.message = why;
    return r;
  }
  const Interpreter python = interpreter_for(o.python);
  const ScratchFolder scratch;
  write_file_atomic((scratch.path() / "main.py").string(), code);
  ChildSetup setup(python, scratch.path(), o);

  Pipe out, err;
  const pid_t pid = fork();
  if (pid < 0) throw Error(fmt::format("sandbox: fork: {}", std::strerror(errno)));
  if (pid == 0) run_child(setup, out.write.fd, err.write.fd);
  setup.ruleset.reset();
  out.write.reset();
  err.write.reset();
  Child child{pid};

  Watch watch{t0 + std::chrono::duration<double>(o.wall_seconds), scratch.path(), o};
  read_output(out.read, err.read, r, watch);
  wait_for_exit(child, watch);
  child.kill_and_reap();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  judge(r, watch, child);
  return r;
}

}  // namespace rho
