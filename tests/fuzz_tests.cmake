# Fuzz.Build builds the libFuzzer targets of fuzz/ with clang in their own tree (build/fuzz);
# Fuzz.<target> runs each for D2V_FUZZ_SECONDS (default below) over its seeds. Skipped (not
# failed) where clang or libFuzzer's runtime is missing. The long runs: fuzz/run.sh.
set(DATA2VEC_FUZZ_SECONDS 30 CACHE STRING "seconds each fuzz target runs in the test suite")
set(fuzz_args -DSOURCE_DIR=${CMAKE_SOURCE_DIR} -DFUZZ_DIR=${CMAKE_BINARY_DIR}/fuzz
              -DTORCH_PREFIX=${CMAKE_PREFIX_PATH} -P ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_smoke.cmake)
add_test(NAME Fuzz.Build COMMAND ${CMAKE_COMMAND} -DMODE=build ${fuzz_args})
set_tests_properties(Fuzz.Build PROPERTIES LABELS unit TIMEOUT 1800 SKIP_REGULAR_EXPRESSION "SKIP: "
  FIXTURES_SETUP fuzz_targets)
foreach(target safetensors checkpoint idx image audio config hf_config torch_state_dict text)
  add_test(NAME Fuzz.${target} COMMAND ${CMAKE_COMMAND} -DMODE=run -DTARGET=${target}
           -DSECONDS=${DATA2VEC_FUZZ_SECONDS} ${fuzz_args})
  set_tests_properties(Fuzz.${target} PROPERTIES LABELS unit TIMEOUT 300 SKIP_REGULAR_EXPRESSION "SKIP: "
    FIXTURES_REQUIRED fuzz_targets)
endforeach()
