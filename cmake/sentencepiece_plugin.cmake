# libd2v_sentencepiece.so: SentencePiece behind a plain C API, loaded at run time by
# src/data2vec/text/tokenizer.cpp. Debian's libsentencepiece carries its own protobuf-lite, which
# clashes with libtorch's protobuf when both are linked into one process (checked: the protobuf versions clash), so
# data2vec_lib must never link sentencepiece: only this plugin does, and it is dlopen()ed with
# RTLD_LOCAL | RTLD_DEEPBIND.
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)

add_library(d2v_sentencepiece SHARED
  ${CMAKE_SOURCE_DIR}/src/plugins/sentencepiece/d2v_sentencepiece.cpp)
target_link_libraries(d2v_sentencepiece PRIVATE PkgConfig::SENTENCEPIECE)
target_compile_options(d2v_sentencepiece PRIVATE ${DATA2VEC_WARNINGS})
# Only the d2v_spm_* entry points are exported; everything must resolve at link time.
set_target_properties(d2v_sentencepiece PROPERTIES
  CXX_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON
  LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
target_link_options(d2v_sentencepiece PRIVATE -Wl,--no-undefined
  -Wl,--version-script=${CMAKE_SOURCE_DIR}/src/plugins/sentencepiece/d2v_sentencepiece.map)
set_property(TARGET d2v_sentencepiece APPEND PROPERTY LINK_DEPENDS
  ${CMAKE_SOURCE_DIR}/src/plugins/sentencepiece/d2v_sentencepiece.map)

# The tokenizer looks for the plugin next to the running executable (and its parent directory,
# where test binaries in tests/ find it), then at this build-time path, unless
# D2V_SENTENCEPIECE_PLUGIN names it.
set_property(SOURCE ${CMAKE_SOURCE_DIR}/src/data2vec/text/tokenizer.cpp APPEND PROPERTY
  COMPILE_DEFINITIONS D2V_SENTENCEPIECE_PLUGIN_BUILD_PATH="$<TARGET_FILE:d2v_sentencepiece>")
# Orders the build (the plugin exists before anything that may load it) without linking it.
add_dependencies(data2vec_lib d2v_sentencepiece)
