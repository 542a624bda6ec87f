# The fuzz targets (fuzz/) in the test suite: MODE=build configures and builds them with clang in
# FUZZ_DIR; MODE=run runs fuzz_TARGET for SECONDS over its committed seeds (fuzz/corpus/TARGET)
# and a scratch corpus. Where clang or libFuzzer's runtime is missing it prints "SKIP: why" and
# ends (the tests skip on that line). A finding fails the test with libFuzzer's report; the input
# is kept in FUZZ_DIR/smoke/TARGET/artifacts/.

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

if(MODE STREQUAL "build")
  find_program(clang NAMES clang++ clang++-14 clang++-15 clang++-16)
  if(NOT clang)
    message("SKIP: no clang++ for the fuzz targets")
    return()
  endif()
  # libFuzzer's runtime: a program with -fsanitize=fuzzer links only where it is installed.
  set(probe ${FUZZ_DIR}/probe)
  file(MAKE_DIRECTORY ${probe})
  file(WRITE ${probe}/probe.cpp
       "#include <cstddef>\n#include <cstdint>\nextern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(COMMAND ${clang} -fsanitize=fuzzer,address,undefined ${probe}/probe.cpp
                          -o ${probe}/probe RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message("SKIP: ${clang} cannot link -fsanitize=fuzzer,address,undefined (libFuzzer's runtime, "
            "Debian: libclang-rt-dev or clang's own package):\n${err}")
    return()
  endif()
  set(prefix_arg)
  if(TORCH_PREFIX)
    string(REPLACE ";" "\\;" prefix_arg "-DCMAKE_PREFIX_PATH=${TORCH_PREFIX}")
  endif()
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/fuzz -B ${FUZZ_DIR} -DCMAKE_CXX_COMPILER=${clang} ${prefix_arg})
  run(${CMAKE_COMMAND} --build ${FUZZ_DIR} -j 2)
  message("fuzz targets built in ${FUZZ_DIR}")
elseif(MODE STREQUAL "run")
  set(binary ${FUZZ_DIR}/fuzz_${TARGET})
  if(NOT EXISTS ${binary})
    message("SKIP: ${binary} was not built (see Fuzz.Build)")
    return()
  endif()
  if(DEFINED ENV{D2V_FUZZ_SECONDS})
    set(SECONDS $ENV{D2V_FUZZ_SECONDS})
  endif()
  # A fixed seed: the suite walks the same inputs on every machine, so a failure in CI reproduces
  # here; fuzz/run.sh's long runs take fresh seeds to break new ground.
  set(seed 1)
  if(DEFINED ENV{D2V_FUZZ_SEED})
    set(seed $ENV{D2V_FUZZ_SEED})
  endif()
  set(extra)
  set(asan ASAN_OPTIONS=)
  if("${TARGET}" STREQUAL "torch_state_dict")  # LibTorch 1.13's zip reader leaks on damaged archives
    set(extra -detect_leaks=0)
    set(asan ASAN_OPTIONS=detect_leaks=0)
  endif()
  set(work ${FUZZ_DIR}/smoke/${TARGET})
  file(REMOVE_RECURSE ${work})
  file(MAKE_DIRECTORY ${work}/corpus ${work}/artifacts)
  execute_process(
    COMMAND ${CMAKE_COMMAND} -E env UBSAN_OPTIONS=print_stacktrace=1 ${asan}
            ${binary} -max_total_time=${SECONDS} -rss_limit_mb=2048 -timeout=25
            -seed=${seed} -print_final_stats=1 -artifact_prefix=${work}/artifacts/ ${extra}
            ${work}/corpus ${SOURCE_DIR}/fuzz/corpus/${TARGET}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REGEX MATCHALL "cov: [0-9]+ ft: [0-9]+" coverage "${err}")
  list(POP_BACK coverage final)
  string(REGEX MATCH "number_of_executed_units: [0-9]+" executions "${err}")
  if(NOT rc EQUAL 0)
    file(GLOB found ${work}/artifacts/*)
    message(FATAL_ERROR "fuzz_${TARGET}: a finding (exit ${rc}), input kept: ${found}\n${err}")
  endif()
  message("fuzz_${TARGET}: ${SECONDS} s, ${executions}, ${final}, no finding")
else()
  message(FATAL_ERROR "MODE must be build or run")
endif()
