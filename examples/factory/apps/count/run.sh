#!/bin/sh
find /app -type f | wc -l
