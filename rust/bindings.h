/* SPDX-License-Identifier: GPL-2.0 */
/* Headers for the module-local bindgen run (see Kbuild). */
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/balloon.h>
#include <linux/mm.h>
#include <linux/oom.h>
#include <linux/notifier.h>
#include <linux/page_reporting.h>
#include <linux/scatterlist.h>
#include <linux/shrinker.h>
#include <linux/workqueue.h>
#include <uapi/linux/virtio_ids.h>
#include <uapi/linux/virtio_balloon.h>
#include "helpers.h"
