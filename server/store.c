/* store -- (in progress) */
#include "store.h"
