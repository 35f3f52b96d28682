/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vballoon C shim: the static inlines and macros of the virtio and mm headers that Rust cannot
 * call directly, and the C side of callbacks whose C type Rust cannot match under kernel CFI.
 * Each helper is a one-liner; every Rust caller lives in rust/virtio, rust/mm or rust/kext.
 */
#ifndef VBALLOON_HELPERS_H
#define VBALLOON_HELPERS_H

#include <linux/types.h>
#include <linux/spinlock_types.h>

struct virtio_device;
struct virtqueue;
struct virtqueue_info;
struct page;
struct balloon_dev_info;
struct delayed_work;
struct scatterlist;
struct notifier_block;
struct device;
struct page_reporting_dev_info;
struct wait_queue_head;

int vballoon_cread_le32(struct virtio_device *vdev, unsigned int offset, u32 *val);
int vballoon_cwrite_le32(struct virtio_device *vdev, unsigned int offset, u32 val);
bool vballoon_has_feature(const struct virtio_device *vdev, unsigned int fbit);
void vballoon_clear_feature(struct virtio_device *vdev, unsigned int fbit);
int vballoon_find_vqs(struct virtio_device *vdev, unsigned int nvqs, struct virtqueue *vqs[],
		      struct virtqueue_info vqs_info[]);
void vballoon_del_vqs(struct virtio_device *vdev);
void vballoon_reset_device(struct virtio_device *vdev);
bool vballoon_has_config_get(const struct virtio_device *vdev);
void vballoon_device_ready(struct virtio_device *vdev);
int vballoon_add_outbuf(struct virtqueue *vq, void *buf, unsigned int len);
unsigned long vballoon_page_to_pfn(struct page *page);
void vballoon_put_page(struct page *page);
void vballoon_devinfo_init(struct balloon_dev_info *info, bool adjust_managed);
unsigned long vballoon_isolated_pages(struct balloon_dev_info *info);
unsigned long vballoon_mem_available_pages(void);
unsigned int vballoon_page_shift(void);
bool vballoon_flush_delayed_work(struct delayed_work *dwork);
void vballoon_init_waitqueue(struct wait_queue_head *wq);
void vballoon_wake_all(struct wait_queue_head *wq);
long vballoon_wait_seq_changed(struct wait_queue_head *wq, const u64 *seq, u64 seen,
			       unsigned long timeout);
struct page *vballoon_dequeue_one(struct balloon_dev_info *info);
unsigned long vballoon_node_page_state(unsigned int item);
struct page *vballoon_balloon_block_alloc(unsigned int order);
unsigned long vballoon_enqueue_pages(struct balloon_dev_info *info, struct page *const *pages,
				     unsigned long n);
unsigned long vballoon_dequeue_pages(struct balloon_dev_info *info, struct page **out,
				     unsigned long n);
unsigned int vballoon_max_page_order(void);
void vballoon_release_pages(struct page **pages, int nr);
u64 vballoon_sg_bytes(struct scatterlist *sg, unsigned int nents);
int vballoon_add_inbuf_sg(struct virtqueue *vq, struct scatterlist *sg, unsigned int nents);
int vballoon_add_inbuf_token(struct virtqueue *vq, struct scatterlist *sg, unsigned int nents,
			     void *token);
struct page *vballoon_alloc_free_block(unsigned int order);
void vballoon_free_block(struct page *page, unsigned int order);
void vballoon_sg_init_block(struct scatterlist *sg, struct page *page, unsigned int order);
unsigned int vballoon_hint_block_order(void);
unsigned long vballoon_totalram_pages(void);
struct shrinker;
struct workqueue_struct;
struct shrinker *vballoon_shrinker_register(void *private_data, const char *name);
struct workqueue_struct *vballoon_alloc_freezable_wq(const char *name);
int vballoon_oom_register(struct notifier_block *nb);
int vballoon_reporting_register(struct page_reporting_dev_info *info, unsigned int capacity);
bool vballoon_want_init_on_free(void);
void vballoon_set_wakeup_capable(struct virtio_device *vdev);
void vballoon_stay_awake(struct virtio_device *vdev);
void vballoon_relax(struct virtio_device *vdev);
bool vballoon_page_poisoning_enabled(void);
struct vballoon_attrs;
int vballoon_attrs_add(struct virtio_device *vdev, const char *group, const char *const *names,
		       unsigned int n, const void *hook, struct vballoon_attrs **out);
void vballoon_attrs_remove(struct vballoon_attrs *g);
/* The module parameters (declared in helpers.c; read-only in sysfs). */
unsigned long vballoon_param_floor_mib(void);
unsigned int vballoon_param_block_kib(void);
unsigned int vballoon_param_host_timeout_ms(void);

/* spin_lock_irqsave and friends (macros in C): the 7.2 build's IRQ-safe lock (kext/irqlock.rs). */
unsigned long vballoon_spin_lock_irqsave(spinlock_t *lock);
int vballoon_spin_trylock_irqsave(spinlock_t *lock, unsigned long *flags);
void vballoon_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags);

/* Tracepoints (rust/trace.c, events in rust/vballoon_trace.h). */
void vballoon_trace_step(const struct device *dev, bool inflate, unsigned long pages, u64 wait_ns,
			 u64 held);
void vballoon_trace_target(const struct device *dev, u32 num_pages, u64 target, u64 held);
void vballoon_trace_floor(const struct device *dev, u64 held, u64 target, u64 available, u64 floor);
void vballoon_trace_stats(const struct device *dev, u64 served);
void vballoon_trace_oom(const struct device *dev, unsigned long pages, u64 held);

#ifndef __BINDGEN__
/* Defined in Rust (rust/mm/list.rs), called directly from vballoon_migratepage. */
int vballoon_rust_migratepage(struct balloon_dev_info *info, struct page *newpage,
			      struct page *page);
/* Defined in Rust (rust/mm/oom.rs): guest pages freed. */
unsigned long vballoon_rust_oom_notify(struct notifier_block *nb);
/* Defined in Rust (rust/mm/shrinker.rs). */
unsigned long vballoon_rust_shrink_count(void *private_data);
unsigned long vballoon_rust_shrink_scan(void *private_data, unsigned long nr);
/* Defined in Rust (rust/mm/reporting.rs). */
int vballoon_rust_page_report(struct page_reporting_dev_info *info, struct scatterlist *sg,
			      unsigned int nents);
/* Defined in Rust (rust/virtio/attrs.rs): bytes written to buf. */
long vballoon_rust_attr_show(const void *hook, unsigned int idx, char *buf, unsigned long len);
#endif

#endif /* VBALLOON_HELPERS_H */
