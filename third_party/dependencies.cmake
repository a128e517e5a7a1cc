# Finds every dependency. LibTorch: your own (Torch_DIR / CMAKE_PREFIX_PATH), else the project venv's wheel.
if(NOT Torch_DIR AND NOT DEFINED ENV{Torch_DIR})
  set(_rho_py "${PROJECT_SOURCE_DIR}/.venv/bin/python")
  if(EXISTS "${_rho_py}")
    execute_process(COMMAND "${_rho_py}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                    OUTPUT_VARIABLE _rho_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
    if(_rc EQUAL 0)
      list(APPEND CMAKE_PREFIX_PATH "${_rho_torch_prefix}")
    endif()
  endif()
endif()

# CUDA: decide before Torch so that torch's own CUDA glue sees a consistent toolkit.
set(RHO_WITH_CUDA OFF)
if(NOT RHO_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Torch's CMake glue sets the -gencode flags from TORCH_CUDA_ARCH_LIST and ignores
    # CMAKE_CUDA_ARCHITECTURES, so librho's setting feeds the former.
    # Default: A100 (8.0), Hopper with its own instructions (9.0a), and compute_90 PTX that newer GPUs JIT-compile.
    set(RHO_CUDA_ARCHS "8.0;9.0a;9.0+PTX" CACHE STRING "CUDA architectures, Torch style (e.g. 8.0;9.0a;9.0+PTX)")
    set(TORCH_CUDA_ARCH_LIST "${RHO_CUDA_ARCHS}")
    set(CMAKE_CUDA_ARCHITECTURES OFF)
    enable_language(CUDA)
    set(RHO_WITH_CUDA ON)
  elseif(RHO_CUDA STREQUAL "ON")
    message(FATAL_ERROR "RHO_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()
message(STATUS "librho: CUDA kernels ${RHO_WITH_CUDA}")

unset(CMAKE_CUDA_ARCHITECTURES)
find_package(Torch REQUIRED)
find_package(fmt REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
pkg_check_modules(GINAC REQUIRED IMPORTED_TARGET ginac)        # libginac-dev: the math judge's algebra
pkg_check_modules(SECCOMP REQUIRED IMPORTED_TARGET libseccomp)  # libseccomp-dev: the code sandbox
find_package(ZLIB REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(Threads REQUIRED)
