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
# TensorBoard event files: Boost.CRC (libboost-dev, headers only) computes their CRC-32C.
find_package(Boost REQUIRED)

# Parquet and Arrow corpora (librho/data/columnar.h), optional: Apache Arrow's C++ libraries and headers as the
# pyarrow wheel ships them (pyarrow.get_include(), get_library_dirs()), the way the torch wheel ships LibTorch.
# RHO_ARROW: AUTO (use pyarrow when the Python below has it), ON (require it), OFF.
set(RHO_ARROW AUTO CACHE STRING "Parquet/Arrow input through pyarrow's Arrow C++ libraries: AUTO, ON or OFF")
set(RHO_ARROW_PYTHON "${PROJECT_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH "Python whose pyarrow provides Arrow C++")
set(RHO_WITH_ARROW OFF)
if(NOT RHO_ARROW STREQUAL "OFF")
  set(_rho_arrow_why "")
  if(EXISTS "${RHO_ARROW_PYTHON}")
    execute_process(COMMAND "${RHO_ARROW_PYTHON}" -c
                    "import pyarrow as pa; print(pa.get_include()); print(pa.get_library_dirs()[0]); print(pa.__version__)"
                    OUTPUT_VARIABLE _rho_pa OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc ERROR_QUIET)
    if(_rc EQUAL 0)
      string(REPLACE "\n" ";" _rho_pa "${_rho_pa}")
      list(GET _rho_pa 0 RHO_ARROW_INCLUDE_DIR)
      list(GET _rho_pa 1 RHO_ARROW_LIB_DIR)
      list(GET _rho_pa 2 RHO_ARROW_VERSION)
      # The wheel holds versioned names only (libarrow.so.2600, ...).
      file(GLOB _rho_arrow_so "${RHO_ARROW_LIB_DIR}/libarrow.so.[0-9]*")
      file(GLOB _rho_parquet_so "${RHO_ARROW_LIB_DIR}/libparquet.so.[0-9]*")
      list(FILTER _rho_arrow_so EXCLUDE REGEX "\\.so\\.[0-9]+\\.")
      list(FILTER _rho_parquet_so EXCLUDE REGEX "\\.so\\.[0-9]+\\.")
      if(_rho_arrow_so AND _rho_parquet_so AND EXISTS "${RHO_ARROW_INCLUDE_DIR}/parquet/arrow/reader.h")
        add_library(rho_arrow INTERFACE IMPORTED)
        set_target_properties(rho_arrow PROPERTIES
          INTERFACE_INCLUDE_DIRECTORIES "${RHO_ARROW_INCLUDE_DIR}"
          INTERFACE_LINK_LIBRARIES "${_rho_parquet_so};${_rho_arrow_so}")
        set(RHO_WITH_ARROW ON)
      else()
        set(_rho_arrow_why "pyarrow ${RHO_ARROW_VERSION} has no Arrow C++ libraries or headers")
      endif()
    else()
      set(_rho_arrow_why "${RHO_ARROW_PYTHON} cannot import pyarrow")
    endif()
  else()
    set(_rho_arrow_why "no ${RHO_ARROW_PYTHON}")
  endif()
  if(NOT RHO_WITH_ARROW)
    if(RHO_ARROW STREQUAL "ON")
      message(FATAL_ERROR "RHO_ARROW=ON, but ${_rho_arrow_why} (scripts/setup.sh installs pyarrow)")
    endif()
    message(STATUS "librho: Parquet/Arrow input OFF: ${_rho_arrow_why} (scripts/setup.sh installs pyarrow)")
  endif()
endif()
message(STATUS "librho: Parquet/Arrow input ${RHO_WITH_ARROW} ${RHO_ARROW_VERSION}")
