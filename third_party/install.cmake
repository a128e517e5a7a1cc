# Installs librho as a CMake package: find_package(librho) gives librho::librho.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
install(TARGETS librho librho_data EXPORT librhoTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET rho_columnar)  # the Arrow plugin, beside the library that loads it
  install(TARGETS rho_columnar LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
install(DIRECTORY librho/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/librho
        FILES_MATCHING PATTERN "*.h" PATTERN "pch.h" EXCLUDE)
install(EXPORT librhoTargets NAMESPACE librho:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/librho)
configure_package_config_file(third_party/librhoConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/librhoConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/librho)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/librhoConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/librhoConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/librhoConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/librho)
if(RHO_BUILD_APPS)
  # Installed tools find the installed librho and the LibTorch it was linked against.
  get_filename_component(_rho_torch_lib_dir "${TORCH_LIBRARY}" DIRECTORY)
  set_target_properties(${RHO_APPS} PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR};${_rho_torch_lib_dir}")
  install(TARGETS ${RHO_APPS} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
