/*
 * Return codes of every generated sindyrl_<name>_eval function (sparse, fixed point, neural, policy set).
 * One copy, shared: firmware_bridge.codegen copies this file next to the C it generates.
 */
#ifndef SINDYRL_EVAL_H
#define SINDYRL_EVAL_H

#define SINDYRL_EVAL_OK 0                /* outputs written, all finite */
#define SINDYRL_EVAL_ERR_ARG (-1)        /* NULL pointer or wrong n_in / n_out */
#define SINDYRL_EVAL_ERR_NONFINITE (-2)  /* NaN/inf input (nothing written) or output */
#define SINDYRL_EVAL_ERR_BACKEND (-3)    /* the inference engine reported an error */
#define SINDYRL_EVAL_ERR_DOMAIN (-4)     /* an input outside the model's input bounds (domain guard) */

#endif /* SINDYRL_EVAL_H */
