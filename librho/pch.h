// Precompiled header for librho's own targets (not installed): the heavy LibTorch headers every TU needs.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
