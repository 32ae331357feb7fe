/* Control: a core file that includes only core compiles with core's
 * include path (so the probes below fail for their include alone). */
#include "core/module.h"
#include "core/supervisor.h"
