#pragma once
// Running model-written Python (tool-integrated reasoning) as hostile input: each program runs in a fresh
// process with
//   - a fresh empty working directory (removed afterwards), HOME and TMPDIR pointing into it;
//   - Landlock (Linux >= 5.13): the file system is read-only and only where the interpreter needs it (its
//     prefixes and site-packages, /usr, /lib*, /bin, a few /etc, /dev and /sys/devices/system/cpu files);
//     writable only inside the working directory; TCP bind/connect denied (Landlock ABI >= 4), abstract Unix
//     sockets and signals outside the sandbox denied (ABI >= 6);
//   - seccomp: no new processes (fork, vfork, clone without CLONE_THREAD), no sockets, no signals, priorities
//     or limits of other processes, no memfd, no file metadata changes by path (chmod, chown, xattrs, times,
//     truncate), no ptrace, mount, namespaces, keyrings, bpf or io_uring;
//   - no descriptor of the parent's but stdin, stdout and stderr;
//   - rlimits: CPU seconds, address space, size of any file written, open files, no core dumps;
//   - a wall-clock limit, a cap on captured output and on the bytes in its folder, past which its process
//     group is killed (also when it has closed its output);
//   - stdin from /dev/null and a minimal environment.
// Without Landlock, run_python refuses (SandboxResult::Status::Unavailable) instead of running unconfined.
#include <cstdint>
#include <string>

namespace rho {

struct SandboxOptions {
  std::string python = "python3";       // the interpreter, found on PATH
  // RLIMIT_CPU: the harness allows 5 s of wall time in a worker with its modules loaded; a fresh interpreter
  // spends about 2 s of CPU importing sympy and numpy on a 2-core x86-64 CPU.
  double cpu_seconds = 10;
  double wall_seconds = 20;              // killed after this long, whatever it does
  int64_t memory_bytes = int64_t(4) << 30;     // RLIMIT_AS
  int64_t file_bytes = int64_t(16) << 20;      // RLIMIT_FSIZE: the largest file it may write
  int64_t output_bytes = int64_t(1) << 20;     // stdout + stderr kept; more kills it
  int64_t folder_bytes = int64_t(64) << 20;    // all files in its folder together; more kills it
};

struct SandboxResult {
  enum class Status { Ok, Error, CpuLimit, WallLimit, OutputLimit, FolderLimit, Killed, Unavailable };
  Status status = Status::Ok;
  int exit_code = 0;
  std::string out, err;         // captured stdout and stderr (at most output_bytes in all)
  std::string message;          // the last line of stderr for an Error, or what stopped it
  bool missing_module = false;  // it failed on an import of a module the interpreter does not have
  double seconds = 0;
};

const char* status_name(SandboxResult::Status s);

// Why the sandbox cannot run here ("" when it can): no Landlock, no seccomp.
std::string sandbox_unavailable_reason();

SandboxResult run_python(const std::string& code, const SandboxOptions& options = {});

}  // namespace rho
