# Packaging, Python client and demo tests (ctest fragment, included by tests/CMakeLists.txt).
# Shell/Python tests run the real tools: systemd-analyze on the unit, cpack + dpkg-deb on the
# package, the packaged prefixd against a test model through NOTIFY_SOCKET, the Python client.
set(PKG_TEST_DIR ${CMAKE_CURRENT_SOURCE_DIR})

add_test(NAME packaging_unit
         COMMAND ${PKG_TEST_DIR}/test_packaging_unit.sh ${PROJECT_SOURCE_DIR} ${CMAKE_BINARY_DIR})
set_tests_properties(packaging_unit PROPERTIES TIMEOUT 120 LABELS packaging
                                               ENVIRONMENT "${PREFIXD_TEST_ENV}")

# Builds the .deb once; the READY test below unpacks it.
add_test(NAME packaging_deb
         COMMAND ${PKG_TEST_DIR}/test_packaging_deb.sh ${PROJECT_SOURCE_DIR} ${CMAKE_BINARY_DIR})
set_tests_properties(packaging_deb PROPERTIES TIMEOUT 600 LABELS packaging FIXTURES_SETUP packaging_deb
                                              ENVIRONMENT "${PREFIXD_TEST_ENV}")

add_test(NAME python_client_wire
         COMMAND /usr/bin/python3 ${PKG_TEST_DIR}/test_python_client_wire.py)
set_tests_properties(python_client_wire PROPERTIES TIMEOUT 60 LABELS python
                                                   ENVIRONMENT "${PREFIXD_TEST_ENV}")

# Runs a command with only the socket address families named (as RestrictAddressFamilies= does).
add_executable(restrict_af ${PKG_TEST_DIR}/restrict_af.c)
set_target_properties(restrict_af PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)

# The packaged prefixd from the packaged config, under the unit's address families, reports
# READY=1 through NOTIFY_SOCKET.
add_test(NAME packaging_ready COMMAND /usr/bin/python3 ${PKG_TEST_DIR}/test_packaging_ready.py)
set_tests_properties(packaging_ready PROPERTIES TIMEOUT 400 LABELS packaging
                     FIXTURES_REQUIRED "packaging_deb;test_models" ENVIRONMENT "${PREFIXD_TEST_ENV}")

# The Python client against the real daemon on the tiny model (CURVE, tenant + adapter via prefixctl).
add_test(NAME python_client_daemon COMMAND /usr/bin/python3 ${PKG_TEST_DIR}/test_python_client_daemon.py)
set_tests_properties(python_client_daemon PROPERTIES TIMEOUT 600 LABELS python
                     FIXTURES_REQUIRED test_models ENVIRONMENT "${PREFIXD_TEST_ENV}")

# The GPU-machine bundle (tools/device_bundle.sh) and its runner in smoke mode, on lavapipe.
add_test(NAME device_bundle_smoke
         COMMAND ${PKG_TEST_DIR}/test_device_bundle.sh ${PROJECT_SOURCE_DIR} ${CMAKE_BINARY_DIR})
set_tests_properties(device_bundle_smoke PROPERTIES TIMEOUT 600 LABELS "packaging;vulkan"
                                                    ENVIRONMENT "${PREFIXD_TEST_ENV}")
