# Shared by the cmake -P scripts that inspect the built library (vector_clones.cmake,
# parallel_regions.cmake).

# Runs a tool (objdump, nm) over the library and sets `out_var` to its output as a CMake list of
# lines (";" in a line becomes ","); a failing tool is a fatal error naming it.
function(library_listing_lines out_var)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE listing ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "${command} failed (${rc}): ${err}")
  endif()
  string(REPLACE ";" "," listing "${listing}")
  string(REPLACE "\n" ";" lines "${listing}")
  set(${out_var} "${lines}" PARENT_SCOPE)
endfunction()

# Fails with `title` and one indented line per entry of `failures`, if there is any.
function(fail_if_any failures title)
  if(failures)
    string(REPLACE ";" "\n  " failures "${failures}")
    message(FATAL_ERROR "${title}:\n  ${failures}")
  endif()
endfunction()
