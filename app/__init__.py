"""Sangyu (桑榆): community elderly meal assistance and 我为老人助一餐 micro-donations."""
