// Process set-up the programs make before any work: the allocator keeps freed memory.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "data2vec/train/device.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace {

#ifdef __GLIBC__
// A block of the size of a step's activations (16 MiB) is served from the heap, not from an
// mmap of its own, and stays in the process after free: glibc's defaults (mmap threshold
// 128 KiB, raised only by frees that have already gone back to the kernel) would munmap it,
// and the next step would fault and zero it again.
TEST(KeepFreedMemory, AStepSizedBlockIsServedFromTheHeapAndKeptAfterFree) {
  ASSERT_TRUE(data2vec::train::keep_freed_memory());
  constexpr size_t kBytes = size_t(16) << 20;
  const auto before = mallinfo2();
  char* volatile block = static_cast<char*>(std::malloc(kBytes));
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBytes);
  const auto during = mallinfo2();
  EXPECT_EQ(during.hblks, before.hblks) << "the block was mmapped on its own";
  EXPECT_GE(during.arena, kBytes) << "the heap does not hold the block";
  std::free(block);
  const auto after = mallinfo2();
  EXPECT_EQ(after.arena, during.arena) << "the heap was trimmed on free";
  EXPECT_GE(after.fordblks, kBytes) << "the freed block left the process";
}

// A freed block at the heap's top stays however large it is: a batch-128 vision step frees over
// 1 GiB at once, and a trim threshold (1 GiB before) would give it back to be faulted in again
// on the next step.
TEST(KeepFreedMemory, AFreedTopOfOverAGibibyteIsNotTrimmed) {
  ASSERT_TRUE(data2vec::train::keep_freed_memory());
  constexpr size_t kBytes = (size_t(1) << 30) + (size_t(64) << 20);
  char* volatile block = static_cast<char*>(std::malloc(kBytes));
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBytes);
  const auto during = mallinfo2();
  EXPECT_GE(during.arena, kBytes) << "the heap does not hold the block";
  std::free(block);
  const auto after = mallinfo2();
  EXPECT_EQ(after.arena, during.arena) << "the heap was trimmed on free";
}

// Above glibc's largest mmap threshold (32 MiB) a block would still be mmapped on its own (an
// audio batch's first conv activations are 52 MB): on the main thread, where the steps run, it
// comes from the heap as well. Another thread's arena cannot hold it: glibc falls back to an
// mmap there, so the allocation still succeeds.
TEST(KeepFreedMemory, BlocksAboveTheLargestMmapThresholdComeFromTheHeap) {
  ASSERT_TRUE(data2vec::train::keep_freed_memory());
  constexpr size_t kBytes = size_t(80) << 20;
  const auto allocate = [](bool from_heap) {
    const auto before = mallinfo2();
    char* volatile block = static_cast<char*>(std::malloc(kBytes));
    ASSERT_NE(block, nullptr);
    std::memset(block, 1, kBytes);
    if (from_heap) {
      EXPECT_EQ(mallinfo2().hblks, before.hblks) << "the block was mmapped";
    }
    std::free(block);
  };
  allocate(/*from_heap=*/true);
  std::thread worker(allocate, /*from_heap=*/false);
  worker.join();
}
#endif

}  // namespace
