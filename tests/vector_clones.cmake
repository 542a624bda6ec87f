# The AVX2 clones of the elementwise kernels (DATA2VEC_VECTOR_CLONES in src/data2vec/nn/vec_math.h)
# must be vectorised: the resolver runs them on every AVX2 CPU, and GCC can compile a clone to
# scalar code without a word (a `?:` it does not if-convert, a load made conditional by a null
# test in the loop). Disassembles the library (objdump) and fails for each listed kernel whose
# .avx2 clone uses no ymm register. Prints "SKIP: why" where there are no clones to inspect
# (not GCC on x86-64 Linux), no objdump, or a build type other than Release (-O3: GCC 12 at -O2
# vectorises only loops that need no scalar epilogue).
#   cmake -DLIBRARY=libdata2vec_lib.a -DOBJDUMP=objdump -DBUILD_TYPE=Release -P vector_clones.cmake
set(kernels gelu_forward gelu_backward gelu_backward_from_output_row softmax_row probs_row
    add_bias_and_padding dot adamw_update scaled_residual_backward_row add_to layer_norm_row
    layer_norm_backward_row)

if(NOT BUILD_TYPE STREQUAL "Release")
  message("SKIP: a ${BUILD_TYPE} build (the kernels are vectorised in Release builds)")
  return()
endif()

if(NOT OBJDUMP OR NOT EXISTS "${OBJDUMP}")
  message("SKIP: no objdump")
  return()
endif()
include(${CMAKE_CURRENT_LIST_DIR}/library_checks.cmake)
library_listing_lines(lines ${OBJDUMP} -d --no-show-raw-insn ${LIBRARY})
if(NOT lines MATCHES "\\.avx2>:")
  message("SKIP: ${LIBRARY} has no .avx2 clones (the compiler builds no target_clones)")
  return()
endif()

# Count ymm instructions per function: a function starts at "<address> <symbol>:".
set(current "")
set(failures "")
foreach(kernel IN LISTS kernels)
  set(found_${kernel} FALSE)
  set(ymm_${kernel} 0)
endforeach()
foreach(line IN LISTS lines)
  if(line MATCHES "^[0-9a-f]+ <(.*)>:$")
    set(current "")
    set(symbol "${CMAKE_MATCH_1}")
    foreach(kernel IN LISTS kernels)
      # Itanium-mangled: the kernel's name is preceded by its length, e.g. 12gelu_forward.
      string(LENGTH "${kernel}" n)
      if(symbol MATCHES "${n}${kernel}E.*\\.avx2$")
        set(current ${kernel})
        set(found_${kernel} TRUE)
      endif()
    endforeach()
  elseif(current AND line MATCHES "%ymm")
    math(EXPR ymm_${current} "${ymm_${current}} + 1")
  endif()
endforeach()
foreach(kernel IN LISTS kernels)
  if(NOT found_${kernel})
    list(APPEND failures "${kernel}: no .avx2 clone in ${LIBRARY}")
  elseif(ymm_${kernel} EQUAL 0)
    list(APPEND failures "${kernel}: its .avx2 clone is scalar (no ymm instruction)")
  else()
    message("${kernel}.avx2: ${ymm_${kernel}} ymm instructions")
  endif()
endforeach()
fail_if_any("${failures}" "kernels that AVX2 CPUs run unvectorised")
