# Every at::parallel_for in the library's hot kernels must compile to an OpenMP parallel region:
# ATen/Parallel.h makes it a plain serial loop in code built without -fopenmp, silently (the
# blocked attention then ran all its (batch x head) tiles on one thread). Lists the undefined
# symbols of each object (nm) and fails for each one that starts no parallel region: GOMP_parallel
# (GCC's libgomp) or __kmpc_fork_call (LLVM's libomp). Prints "SKIP: why" where the build has no
# OpenMP (CMake warned at configure time) or there is no nm.
#   cmake -DLIBRARY=libdata2vec_lib.a -DNM=nm -DOPENMP=TRUE -P parallel_regions.cmake
set(objects attention.cpp.o gemm.cpp.o gelu.cpp.o)

if(NOT OPENMP)
  message("SKIP: built without OpenMP")
  return()
endif()
if(NOT NM OR NOT EXISTS "${NM}")
  message("SKIP: no nm")
  return()
endif()
include(${CMAKE_CURRENT_LIST_DIR}/library_checks.cmake)
library_listing_lines(lines ${NM} -A -u ${LIBRARY})
set(failures "")
foreach(object IN LISTS objects)
  set(found FALSE)
  set(regions FALSE)
  foreach(line IN LISTS lines)
    # "<archive>:<object>: U <symbol>", the object's name without its directory.
    if(line MATCHES ":${object}:")
      set(found TRUE)
      if(line MATCHES " U (GOMP_parallel|__kmpc_fork_call)$")
        set(regions TRUE)
      endif()
    endif()
  endforeach()
  if(NOT found)
    list(APPEND failures "${object}: not in ${LIBRARY} (or it references nothing)")
  elseif(NOT regions)
    list(APPEND failures "${object}: no OpenMP parallel region (its parallel_for runs serially)")
  else()
    message("${object}: starts OpenMP parallel regions")
  endif()
endforeach()
fail_if_any("${failures}" "objects whose at::parallel_for is serial")
