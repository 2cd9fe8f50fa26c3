// HAL plugin ABI: everything a plugin (or a loader) includes. See plugin.h first.
#ifndef HAL_HAL_H_
#define HAL_HAL_H_

#include "hal/status.h"
#include "hal/device.h"
#include "hal/memory.h"
#include "hal/stream.h"
#include "hal/collective.h"
#include "hal/kernel.h"
#include "hal/extension.h"
#include "hal/topology.h"
#include "hal/plugin.h"

#endif  // HAL_HAL_H_
