# Adapter-file parsers (.npy, safetensors, raw f32) under libFuzzer.
prefixd_fuzz_target(NAME fuzz_adapter_file
    SOURCES ${PREFIXD_SRC}/tests/fuzz/fuzz_adapter_file.cpp
            ${PREFIXD_SRC}/adapters_store/adapter_file.cpp
            ${PREFIXD_SRC}/adapters_store/adapter_npy.cpp
            ${PREFIXD_SRC}/adapters_store/adapter_safetensors.cpp
    LIBS nlohmann_json::nlohmann_json)
