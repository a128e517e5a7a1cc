# Compile time is scarce (LibTorch headers are heavy): cache compiles and link with lld.
find_program(RHO_CCACHE ccache)
if(RHO_CCACHE)
  # ccache caches compiles that use a precompiled header only with this sloppiness, and shares hits between
  # clones only with paths relative to the source tree; both must reach the compile commands themselves.
  set(_rho_ccache ${CMAKE_COMMAND} -E env
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      CCACHE_BASEDIR=${PROJECT_SOURCE_DIR} ${RHO_CCACHE})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${_rho_ccache})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${_rho_ccache})
endif()
include(CheckLinkerFlag)
check_linker_flag(CXX "-fuse-ld=lld" RHO_HAS_LLD)
if(RHO_HAS_LLD)
  add_link_options("$<$<LINK_LANGUAGE:CXX>:-fuse-ld=lld>")
endif()

# One precompiled header shared by every executable (apps, tests, bench): built once, reused.
function(rho_use_exe_pch target)
  if(NOT RHO_PCH)
    return()
  endif()
  if(NOT TARGET rho_exe_pch)
    file(WRITE ${CMAKE_BINARY_DIR}/rho_exe_pch.cpp "// host of the shared precompiled header\n")
    add_library(rho_exe_pch OBJECT ${CMAKE_BINARY_DIR}/rho_exe_pch.cpp)
    target_link_libraries(rho_exe_pch PRIVATE librho fmt::fmt-header-only nlohmann_json::nlohmann_json)
    target_precompile_headers(rho_exe_pch PRIVATE ${PROJECT_SOURCE_DIR}/librho/pch.h)
  endif()
  target_precompile_headers(${target} REUSE_FROM rho_exe_pch)
endfunction()
