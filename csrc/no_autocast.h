// Autocast keys stay active while a custom op without an autocast kernel runs, so the ATen calls
// inside a kernel (at::mm, dtype conversions) would be recast to bf16/fp16 and break the dtypes the
// kernel chose. Every kernel entry point switches autocast off for its own body.
#pragma once

#include <c10/core/impl/LocalDispatchKeySet.h>

#define MUX_NO_AUTOCAST() \
  const c10::impl::ExcludeDispatchKeyGuard mux_no_autocast_guard_(c10::autocast_dispatch_keyset)
