// SPDX-License-Identifier: GPL-2.0
/*
 * Instantiates vballoon's trace events and gives the Rust side (rust/kext/trace.rs) one plain
 * call per event. Each call costs a static-key test when the event is off.
 */

#include <linux/virtio.h>
#include <linux/virtio_config.h>
#define CREATE_TRACE_POINTS
#include "vballoon_trace.h"
#include "helpers.h"

void vballoon_trace_step(const struct device *dev, bool inflate, unsigned long pages, u64 wait_ns,
			 u64 held)
{
	if (inflate)
		trace_vballoon_inflate(dev, pages, wait_ns, held);
	else
		trace_vballoon_deflate(dev, pages, wait_ns, held);
}

void vballoon_trace_target(const struct device *dev, u32 num_pages, u64 target, u64 held)
{
	trace_vballoon_target(dev, num_pages, target, held);
}

void vballoon_trace_floor(const struct device *dev, u64 held, u64 target, u64 available, u64 floor)
{
	trace_vballoon_floor(dev, held, target, available, floor);
}

void vballoon_trace_stats(const struct device *dev, u64 served)
{
	trace_vballoon_stats(dev, served);
}

void vballoon_trace_oom(const struct device *dev, unsigned long pages, u64 held)
{
	trace_vballoon_oom(dev, pages, held);
}
