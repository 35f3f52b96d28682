/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vballoon's trace events (tracefs: events/vballoon/, perf: vballoon:*). Defined the kernel's
 * way; rust/trace.c instantiates them and gives the Rust side one call per event.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM vballoon

#if !defined(_VBALLOON_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _VBALLOON_TRACE_H

#include <linux/device.h>
#include <linux/tracepoint.h>

/* One inflate or deflate step: pages moved, time spent waiting for the host to use them. */
DECLARE_EVENT_CLASS(vballoon_step,
	TP_PROTO(const struct device *dev, unsigned long pages, u64 wait_ns, u64 held),
	TP_ARGS(dev, pages, wait_ns, held),
	TP_STRUCT__entry(
		__string(dev, dev_name(dev))
		__field(unsigned long, pages)
		__field(u64, wait_ns)
		__field(u64, held)
	),
	TP_fast_assign(
		__assign_str(dev);
		__entry->pages = pages;
		__entry->wait_ns = wait_ns;
		__entry->held = held;
	),
	TP_printk("%s pages=%lu wait_us=%llu held=%llu", __get_str(dev), __entry->pages,
		  __entry->wait_ns / 1000, __entry->held)
);

DEFINE_EVENT(vballoon_step, vballoon_inflate,
	TP_PROTO(const struct device *dev, unsigned long pages, u64 wait_ns, u64 held),
	TP_ARGS(dev, pages, wait_ns, held));

DEFINE_EVENT(vballoon_step, vballoon_deflate,
	TP_PROTO(const struct device *dev, unsigned long pages, u64 wait_ns, u64 held),
	TP_ARGS(dev, pages, wait_ns, held));

/* The driver read a new target after a config change (num_pages in 4 KiB units). */
TRACE_EVENT(vballoon_target,
	TP_PROTO(const struct device *dev, u32 num_pages, u64 target, u64 held),
	TP_ARGS(dev, num_pages, target, held),
	TP_STRUCT__entry(
		__string(dev, dev_name(dev))
		__field(u32, num_pages)
		__field(u64, target)
		__field(u64, held)
	),
	TP_fast_assign(
		__assign_str(dev);
		__entry->num_pages = num_pages;
		__entry->target = target;
		__entry->held = held;
	),
	TP_printk("%s num_pages=%u target=%llu held=%llu", __get_str(dev), __entry->num_pages,
		  __entry->target, __entry->held)
);

/* The balloon holds: the guest's MemAvailable is at the floor (all in guest pages). */
TRACE_EVENT(vballoon_floor,
	TP_PROTO(const struct device *dev, u64 held, u64 target, u64 available, u64 floor),
	TP_ARGS(dev, held, target, available, floor),
	TP_STRUCT__entry(
		__string(dev, dev_name(dev))
		__field(u64, held)
		__field(u64, target)
		__field(u64, available)
		__field(u64, floor)
	),
	TP_fast_assign(
		__assign_str(dev);
		__entry->held = held;
		__entry->target = target;
		__entry->available = available;
		__entry->floor = floor;
	),
	TP_printk("%s held=%llu target=%llu available=%llu floor=%llu", __get_str(dev),
		  __entry->held, __entry->target, __entry->available, __entry->floor)
);

/* A stats request answered (the buffer went back to the host). */
TRACE_EVENT(vballoon_stats,
	TP_PROTO(const struct device *dev, u64 served),
	TP_ARGS(dev, served),
	TP_STRUCT__entry(
		__string(dev, dev_name(dev))
		__field(u64, served)
	),
	TP_fast_assign(
		__assign_str(dev);
		__entry->served = served;
	),
	TP_printk("%s served=%llu", __get_str(dev), __entry->served)
);

/* Pages given back because the guest ran out of memory (deflate on OOM). */
TRACE_EVENT(vballoon_oom,
	TP_PROTO(const struct device *dev, unsigned long pages, u64 held),
	TP_ARGS(dev, pages, held),
	TP_STRUCT__entry(
		__string(dev, dev_name(dev))
		__field(unsigned long, pages)
		__field(u64, held)
	),
	TP_fast_assign(
		__assign_str(dev);
		__entry->pages = pages;
		__entry->held = held;
	),
	TP_printk("%s pages=%lu held=%llu", __get_str(dev), __entry->pages, __entry->held)
);

#endif /* _VBALLOON_TRACE_H */

/* This part must be outside the include guard. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE vballoon_trace
#include <trace/define_trace.h>
