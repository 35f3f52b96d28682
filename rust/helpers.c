// SPDX-License-Identifier: GPL-2.0
/* One-line wrappers of static inlines and macros for the Rust side (see helpers.h). */

#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/scatterlist.h>
#include <linux/balloon.h>
#include <linux/mm.h>
#include <linux/workqueue.h>
#include <linux/vmstat.h>
#include <linux/oom.h>
#include <linux/notifier.h>
#include <linux/page_reporting.h>
#include <linux/pm_wakeup.h>
#include <linux/shrinker.h>
#include <linux/gfp.h>
#include <linux/wait.h>
#include <linux/module.h>
#include <linux/device.h>
#include <linux/sysfs.h>
#include <linux/slab.h>
#include <linux/overflow.h>
#include "helpers.h"

/* The one version string: VERSION at the top of the tree (Kbuild passes it in). */
MODULE_VERSION(VBALLOON_VERSION);

/*
 * The module parameters, read-only in /sys/module/vballoon/parameters (the Rust kernel crate's
 * module! params are not in sysfs). Read once, at probe, through the getters below.
 */
static unsigned long floor_mib = 64;
module_param(floor_mib, ulong, 0444);
MODULE_PARM_DESC(floor_mib,
		 "Never inflate while the guest's MemAvailable is below this many MiB (default 64)");
static unsigned int block_kib = 2048;
module_param(block_kib, uint, 0444);
MODULE_PARM_DESC(block_kib,
		 "Inflate in blocks of this many KiB (a power of two) where the allocator has them free, falling back to single pages; 0 = single pages only (default 2048)");
static unsigned int host_timeout_ms = 5000;
module_param(host_timeout_ms, uint, 0444);
MODULE_PARM_DESC(host_timeout_ms,
		 "How long the host may take to use a buffer before the balloon stops and says so; unbind waits at most this long before resetting the device (default 5000)");

unsigned long vballoon_param_floor_mib(void)
{
	return READ_ONCE(floor_mib);
}

unsigned int vballoon_param_block_kib(void)
{
	return READ_ONCE(block_kib);
}

unsigned int vballoon_param_host_timeout_ms(void)
{
	return READ_ONCE(host_timeout_ms);
}

int vballoon_cread_le32(struct virtio_device *vdev, unsigned int offset, u32 *val)
{
	__le32 v;

	if (!vdev->config->get)
		return -EOPNOTSUPP;
	might_sleep();
	vdev->config->get(vdev, offset, &v, sizeof(v));
	*val = le32_to_cpu(v);
	return 0;
}

int vballoon_cwrite_le32(struct virtio_device *vdev, unsigned int offset, u32 val)
{
	__le32 v = cpu_to_le32(val);

	if (!vdev->config->set)
		return -EOPNOTSUPP;
	might_sleep();
	vdev->config->set(vdev, offset, &v, sizeof(v));
	return 0;
}

bool vballoon_has_feature(const struct virtio_device *vdev, unsigned int fbit)
{
	/* Not virtio_has_feature(): that BUG()s on a bit the driver does not offer. */
	return __virtio_test_bit(vdev, fbit);
}

void vballoon_clear_feature(struct virtio_device *vdev, unsigned int fbit)
{
	__virtio_clear_bit(vdev, fbit);
}

int vballoon_find_vqs(struct virtio_device *vdev, unsigned int nvqs, struct virtqueue *vqs[],
		      struct virtqueue_info vqs_info[])
{
	return virtio_find_vqs(vdev, nvqs, vqs, vqs_info, NULL);
}

/*
 * Reset, then wait out every callback in flight: virtio-pci's reset synchronises its vectors
 * itself, virtio-mmio's does not (and CONFIG_VIRTIO_HARDEN_NOTIFICATION, which would make
 * virtio_reset_device() do it, depends on BROKEN).
 */
void vballoon_reset_device(struct virtio_device *vdev)
{
	virtio_reset_device(vdev);
	virtio_synchronize_cbs(vdev);
}

/* The config space can be read: refuse a transport without config->get, as the C driver. */
bool vballoon_has_config_get(const struct virtio_device *vdev)
{
	return vdev->config->get;
}

void vballoon_del_vqs(struct virtio_device *vdev)
{
	vdev->config->del_vqs(vdev);
}

void vballoon_device_ready(struct virtio_device *vdev)
{
	virtio_device_ready(vdev);
}

int vballoon_add_outbuf(struct virtqueue *vq, void *buf, unsigned int len)
{
	struct scatterlist sg;

	sg_init_one(&sg, buf, len);
	/* One segment never needs an allocation: no sleeping, nothing for the OOM path to wait on. */
	return virtqueue_add_outbuf(vq, &sg, 1, buf, GFP_NOWAIT);
}

unsigned long vballoon_page_to_pfn(struct page *page)
{
	return page_to_pfn(page);
}

void vballoon_put_page(struct page *page)
{
	put_page(page);
}

/*
 * balloon_dev_info::migratepage of every vballoon list. Its C type takes an enum, which Rust
 * cannot spell for kernel CFI, so the indirect call lands here and Rust is called directly.
 */
static int vballoon_migratepage(struct balloon_dev_info *info, struct page *newpage,
				struct page *page, enum migrate_mode mode)
{
	return vballoon_rust_migratepage(info, newpage, page);
}

void vballoon_devinfo_init(struct balloon_dev_info *info, bool adjust_managed)
{
	balloon_devinfo_init(info);
	info->adjust_managed_page_count = adjust_managed;
	info->migratepage = vballoon_migratepage;
}

unsigned long vballoon_isolated_pages(struct balloon_dev_info *info)
{
	return READ_ONCE(info->isolated_pages);
}

unsigned long vballoon_mem_available_pages(void)
{
	return si_mem_available();
}

unsigned int vballoon_page_shift(void)
{
	return PAGE_SHIFT;
}

bool vballoon_flush_delayed_work(struct delayed_work *dwork)
{
	return flush_delayed_work(dwork);
}

void vballoon_init_waitqueue(struct wait_queue_head *wq)
{
	init_waitqueue_head(wq);
}

/* Any context, hard IRQ included (the queue's lock is IRQ-safe). */
void vballoon_wake_all(struct wait_queue_head *wq)
{
	wake_up_all(wq);
}

/*
 * Sleeps until *seq differs from seen, at most timeout jiffies, in TASK_IDLE: a pending signal
 * does not end the sleep (the host's answer or the timeout does), and the sleep does not count
 * as load. The writer updates *seq before vballoon_wake_all(), whose queue lock orders it with
 * the waiter's check. Returns the jiffies left (0: timed out).
 */
long vballoon_wait_seq_changed(struct wait_queue_head *wq, const u64 *seq, u64 seen,
			       unsigned long timeout)
{
	return wait_event_idle_timeout(*wq, READ_ONCE(*seq) != seen, timeout);
}

struct page *vballoon_dequeue_one(struct balloon_dev_info *info)
{
	LIST_HEAD(pages);
	struct page *page;

	if (balloon_page_list_dequeue(info, &pages, 1) != 1)
		return NULL;
	page = list_first_entry(&pages, struct page, lru);
	list_del(&page->lru);
	return page;
}

/*
 * A block of 2^order balloon pages, split into 2^order order-0 pages that each hold one
 * reference, if the allocator has a free one right now: no reclaim, no compaction, no kswapd or
 * kcompactd wakeup, no reserves (a balloon falls back to single pages instead). The same zones
 * and migrate type as balloon_page_alloc(), so the pieces are ordinary movable balloon pages.
 */
struct page *vballoon_balloon_block_alloc(unsigned int order)
{
	gfp_t gfp = __GFP_NOMEMALLOC | __GFP_NORETRY | __GFP_NOWARN;
	struct page *page;

	gfp |= IS_ENABLED(CONFIG_BALLOON_MIGRATION) ? GFP_HIGHUSER_MOVABLE : GFP_HIGHUSER;
	page = alloc_pages(gfp & ~__GFP_RECLAIM, order);
	if (page && order)
		split_page(page, order);
	return page;
}

/*
 * Puts @n pages (each one reference, lru unused) into the balloon with one round trip of the
 * balloon lock. Returns how many went in (all of them).
 */
unsigned long vballoon_enqueue_pages(struct balloon_dev_info *info, struct page *const *pages,
				     unsigned long n)
{
	LIST_HEAD(list);
	unsigned long i;

	for (i = 0; i < n; i++)
		list_add_tail(&pages[i]->lru, &list);
	return balloon_page_list_enqueue(info, &list);
}

/*
 * Takes up to @n pages out of the balloon with one round trip of the balloon lock into @out;
 * each carries one reference for the caller. Pages being migrated are skipped. Returns how many.
 */
unsigned long vballoon_dequeue_pages(struct balloon_dev_info *info, struct page **out,
				     unsigned long n)
{
	LIST_HEAD(list);
	struct page *page, *tmp;
	unsigned long got = 0;

	balloon_page_list_dequeue(info, &list, n);
	list_for_each_entry_safe(page, tmp, &list, lru) {
		list_del(&page->lru);
		out[got++] = page;
	}
	return got;
}

/* Shortest run of consecutive PFNs worth one free_contig_range() call. */
#define VBALLOON_MIN_CONTIG_RUN 8

/*
 * Drops the one reference each of @pages (order-0, never compound) holds. Where the kernel has
 * free_contig_range() (CONFIG_CONTIG_ALLOC), each run of at least VBALLOON_MIN_CONTIG_RUN
 * consecutive PFNs, ascending or descending (a deflated block comes back in either order), is
 * given back with one call: it puts each page's reference (a page someone else still holds a
 * reference to is freed by that holder) and frees the run as aligned chunks, one zone-lock
 * round trip per chunk. The other pages go to release_pages() in batches (one pcp lock round
 * trip per batch); the array is reordered doing so.
 */
void vballoon_release_pages(struct page **pages, int nr)
{
#ifdef CONFIG_CONTIG_ALLOC
	int i = 0, rest = 0;

	while (i < nr) {
		unsigned long first = page_to_pfn(pages[i]);
		int len = 1;
		bool up = true;

		if (i + 1 < nr) {
			unsigned long next = page_to_pfn(pages[i + 1]);

			up = next == first + 1;
			if (up || next + 1 == first)
				len = 2;
		}
		if (len == 2) {
			while (i + len < nr &&
			       page_to_pfn(pages[i + len]) ==
				       (up ? first + len : first - len))
				len++;
		}
		if (len >= VBALLOON_MIN_CONTIG_RUN) {
			free_contig_range(up ? first : first - (len - 1), len);
		} else {
			int j;

			for (j = 0; j < len; j++)
				pages[rest++] = pages[i + j];
		}
		i += len;
	}
	nr = rest;
#endif
	if (nr)
		release_pages(pages, nr);
}

unsigned int vballoon_max_page_order(void)
{
	return MAX_PAGE_ORDER;
}

unsigned long vballoon_node_page_state(unsigned int item)
{
	return global_node_page_state(item);
}

u64 vballoon_sg_bytes(struct scatterlist *sg, unsigned int nents)
{
	struct scatterlist *s;
	u64 bytes = 0;
	unsigned int i;

	for_each_sg(sg, s, nents, i)
		bytes += s->length;
	return bytes;
}

int vballoon_add_inbuf_sg(struct virtqueue *vq, struct scatterlist *sg, unsigned int nents)
{
	/* Indirect descriptors are refused in validate, so this never allocates. */
	return virtqueue_add_inbuf(vq, sg, nents, vq, GFP_NOWAIT);
}

/* The OOM notifier's callback; the Rust side is reached by a direct call (kernel CFI). */
static int vballoon_oom_notify(struct notifier_block *nb, unsigned long dummy, void *parm)
{
	unsigned long *freed = parm;

	*freed += vballoon_rust_oom_notify(nb);
	return NOTIFY_OK;
}

int vballoon_oom_register(struct notifier_block *nb)
{
	nb->notifier_call = vballoon_oom_notify;
	nb->priority = 80; /* the C driver's VIRTIO_BALLOON_OOM_NOTIFY_PRIORITY */
	return register_oom_notifier(nb);
}

/* The page reporting callback; the Rust side is reached by a direct call (kernel CFI). */
static int vballoon_page_report(struct page_reporting_dev_info *info, struct scatterlist *sg,
				unsigned int nents)
{
	return vballoon_rust_page_report(info, sg, nents);
}

int vballoon_reporting_register(struct page_reporting_dev_info *info, unsigned int capacity)
{
	info->report = vballoon_page_report;
	info->order = PAGE_REPORTING_ORDER_UNSPECIFIED;
	info->capacity = capacity;
	return page_reporting_register(info);
}

bool vballoon_want_init_on_free(void)
{
	return want_init_on_free();
}

bool vballoon_page_poisoning_enabled(void)
{
	return page_poisoning_enabled_static();
}

/* Static inlines without CONFIG_PM_SLEEP, hence helpers. */
void vballoon_set_wakeup_capable(struct virtio_device *vdev)
{
	device_set_wakeup_capable(&vdev->dev, true);
}

void vballoon_stay_awake(struct virtio_device *vdev)
{
	pm_stay_awake(&vdev->dev);
}

void vballoon_relax(struct virtio_device *vdev)
{
	pm_relax(&vdev->dev);
}

int vballoon_add_inbuf_token(struct virtqueue *vq, struct scatterlist *sg, unsigned int nents,
			     void *token)
{
	return virtqueue_add_inbuf(vq, sg, nents, token, GFP_NOWAIT);
}

/* Free blocks only: no reclaim, no compaction, no reserves (the C driver's hint flags). */
struct page *vballoon_alloc_free_block(unsigned int order)
{
	return alloc_pages(__GFP_NORETRY | __GFP_NOWARN | __GFP_NOMEMALLOC, order);
}

void vballoon_free_block(struct page *page, unsigned int order)
{
	__free_pages(page, order);
}

void vballoon_sg_init_block(struct scatterlist *sg, struct page *page, unsigned int order)
{
	sg_init_one(sg, page_address(page), PAGE_SIZE << order);
}

unsigned int vballoon_hint_block_order(void)
{
	return MAX_PAGE_ORDER;
}

unsigned long vballoon_totalram_pages(void)
{
	return totalram_pages();
}

/* Shrinker callbacks; the Rust side is reached by direct calls (kernel CFI). */
static unsigned long vballoon_shrink_count(struct shrinker *s, struct shrink_control *sc)
{
	return vballoon_rust_shrink_count(s->private_data);
}

static unsigned long vballoon_shrink_scan(struct shrinker *s, struct shrink_control *sc)
{
	return vballoon_rust_shrink_scan(s->private_data, sc->nr_to_scan);
}

struct shrinker *vballoon_shrinker_register(void *private_data, const char *name)
{
	struct shrinker *s = shrinker_alloc(0, "%s", name);

	if (!s)
		return NULL;
	s->count_objects = vballoon_shrink_count;
	s->scan_objects = vballoon_shrink_scan;
	s->private_data = private_data;
	shrinker_register(s);
	return s;
}

struct workqueue_struct *vballoon_alloc_freezable_wq(const char *name)
{
	return alloc_workqueue("%s", WQ_FREEZABLE | WQ_CPU_INTENSIVE | WQ_PERCPU, 0, name);
}

/*
 * Read-only sysfs attributes in a named group (a directory) under a device. The attribute
 * structures are built at run time from the Rust side's list of names; reading one calls the
 * Rust side directly (kernel CFI) with the group's `hook` and the attribute's index.
 */
struct vballoon_attr {
	struct device_attribute da;
	const void *hook;
	unsigned int idx;
};

struct vballoon_attrs {
	struct device *dev;
	struct attribute_group grp;
	struct attribute **ptrs;
	unsigned int n;
	struct vballoon_attr attrs[];
};

static ssize_t vballoon_attr_show(struct device *dev, struct device_attribute *da, char *buf)
{
	struct vballoon_attr *a = container_of(da, struct vballoon_attr, da);

	return vballoon_rust_attr_show(a->hook, a->idx, buf, PAGE_SIZE);
}

int vballoon_attrs_add(struct virtio_device *vdev, const char *group, const char *const *names,
		       unsigned int n, const void *hook, struct vballoon_attrs **out)
{
	struct vballoon_attrs *g;
	unsigned int i;
	int err;

	g = kzalloc(struct_size(g, attrs, n), GFP_KERNEL);
	if (!g)
		return -ENOMEM;
	g->ptrs = kcalloc(n + 1, sizeof(*g->ptrs), GFP_KERNEL);
	if (!g->ptrs) {
		kfree(g);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		struct vballoon_attr *a = &g->attrs[i];

		sysfs_attr_init(&a->da.attr);
		a->da.attr.name = names[i];
		a->da.attr.mode = 0444;
		a->da.show = vballoon_attr_show;
		a->hook = hook;
		a->idx = i;
		g->ptrs[i] = &a->da.attr;
	}
	g->n = n;
	g->grp.name = group;
	g->grp.attrs = g->ptrs;
	err = sysfs_create_group(&vdev->dev.kobj, &g->grp);
	if (err) {
		kfree(g->ptrs);
		kfree(g);
		return err;
	}
	g->dev = get_device(&vdev->dev);
	*out = g;
	return 0;
}

void vballoon_attrs_remove(struct vballoon_attrs *g)
{
	/* Waits for running reads; none starts afterwards. */
	sysfs_remove_group(&g->dev->kobj, &g->grp);
	put_device(g->dev);
	kfree(g->ptrs);
	kfree(g);
}

unsigned long vballoon_spin_lock_irqsave(spinlock_t *lock)
{
	unsigned long flags;

	spin_lock_irqsave(lock, flags);
	return flags;
}

int vballoon_spin_trylock_irqsave(spinlock_t *lock, unsigned long *flags)
{
	return spin_trylock_irqsave(lock, *flags);
}

void vballoon_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags)
{
	spin_unlock_irqrestore(lock, flags);
}
