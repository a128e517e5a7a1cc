#pragma once
// librho: Rho-1's Selective Language Modeling in C++/LibTorch. One include for everything public.
#include "librho/io/hf_checkpoint.h"
#include "librho/io/safetensors.h"
#include "librho/model/config.h"
#include "librho/model/llama.h"
#include "librho/util/error.h"
#include "librho/util/files.h"
